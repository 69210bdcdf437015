// Behaviour every page shares. The Content-Security-Policy allows no inline script or event
// handler attribute, so pages declare it with data attributes instead.

// <form data-confirm="Delete this?">: asks before the form is sent.
document.addEventListener("submit", (event) => {
  const question = event.target.dataset?.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
