// Applies a chosen theme before the first paint (no flash of the wrong one).
try {
  var t = localStorage.getItem("tether.theme");
  if (t === "light" || t === "dark") {
    document.documentElement.dataset.theme = t;
    document.documentElement.style.colorScheme = t;
  }
} catch (e) {}
