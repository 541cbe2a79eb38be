import "@fontsource-variable/inter";
import "./styles.css";

import { render } from "preact";

import { boot } from "./app/store";
import { App } from "./ui/App";

boot();
render(<App />, document.getElementById("app")!);
