// Client routes live in the hash, so any path the host serves is the app
// and a pairing link (`/#/pair/KX7P-Q2MD`) survives a sign-in.

export type Route =
  | { name: "machines" }
  | { name: "sessions" }
  | { name: "pair"; code?: string }
  | { name: "worker"; workerId: string }
  | { name: "session"; sessionId: string };

export function parseRoute(hash: string): Route {
  const path = hash.replace(/^#/, "");
  const parts = path
    .split("/")
    .filter(Boolean)
    .map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
  switch (parts[0]) {
    case "pair":
      return parts[1] ? { name: "pair", code: parts[1] } : { name: "pair" };
    case "sessions":
      return { name: "sessions" };
    case "w":
      if (parts[1]) return { name: "worker", workerId: parts[1] };
      break;
    case "s":
      if (parts[1]) return { name: "session", sessionId: parts[1] };
      break;
  }
  return { name: "machines" };
}

export function href(route: Route): string {
  switch (route.name) {
    case "machines":
      return "#/";
    case "sessions":
      return "#/sessions";
    case "pair":
      return route.code ? `#/pair/${encodeURIComponent(route.code)}` : "#/pair";
    case "worker":
      return `#/w/${encodeURIComponent(route.workerId)}`;
    case "session":
      return `#/s/${encodeURIComponent(route.sessionId)}`;
  }
}
