import "@fontsource-variable/inter";
import "./styles/index.css";

import { render } from "preact";

import { registerServiceWorker } from "./app/attention";
import { boot } from "./app/store";
import { App } from "./ui/App";

boot();
registerServiceWorker();
render(<App />, document.getElementById("app")!);
