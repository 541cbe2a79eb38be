// Applies the theme before the first paint (no flash of the wrong one): the
// one chosen, or else the system's. The stylesheet knows only
// html[data-theme] (src/styles/theme.css); the app keeps it up to date.
var chosen = null;
try {
  chosen = localStorage.getItem("tether.theme");
} catch (e) {}
if (chosen === "light" || chosen === "dark") {
  document.documentElement.dataset.theme = chosen;
  document.documentElement.style.colorScheme = chosen;
} else {
  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
}
