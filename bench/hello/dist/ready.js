requestAnimationFrame(() => {
  document.querySelector("main").dataset.testid = "app-ready";
});
