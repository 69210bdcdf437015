// The selective transfer page. Its form goes over a WebSocket (htmx's ws-send); this component
// tells the server which button sent it, shows the options of folder destinations, and keeps
// the download form's pseudonym equal to the one typed in the transfer part.
document.addEventListener("alpine:init", () => {
  window.Alpine.data("selectiveTransfer", () => ({
    destinationIsFolder: false,
    pseudonym: "",

    init() {
      this.pseudonym = this.$refs.pseudonym.value;
      this.showDestinationOptions();
    },

    // A submit button names its action in data-action ("search" or "transfer").
    chooseAction(event) {
      this.$refs.action.value = event.currentTarget.dataset.action;
    },

    // Results of another source mean nothing: the server answers "reset" with an empty table.
    resetResults() {
      this.$refs.action.value = "reset";
      this.$refs.form.requestSubmit();
    },

    showDestinationOptions() {
      const option = this.$refs.destination.selectedOptions[0];
      this.destinationIsFolder = option?.dataset.folder === "1";
    },

    destinationIsNotFolder() {
      return !this.destinationIsFolder;
    },

    copyPseudonym(event) {
      this.pseudonym = event.target.value;
    },
  }));
});
