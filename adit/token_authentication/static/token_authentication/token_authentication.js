// The "Copy" button of a newly generated token.
document.addEventListener("alpine:init", () => {
  window.Alpine.data("tokenCopy", () => ({
    copied: false,

    copy() {
      navigator.clipboard.writeText(this.$refs.token.textContent.trim()).then(() => {
        this.copied = true;
        setTimeout(() => {
          this.copied = false;
        }, 2000);
      });
    },

    iconClass() {
      return this.copied ? "bi-check2" : "bi-clipboard";
    },

    label() {
      return this.copied ? "Copied" : "Copy";
    },
  }));
});
