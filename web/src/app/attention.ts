// Getting the user back when the agent needs them: a browser notification
// and a count in the tab title while the tab is hidden.

let unseen = 0;
let baseTitle = "Tether";

function render(): void {
  document.title = unseen > 0 ? `(${unseen}) ${baseTitle}` : baseTitle;
}

/** The title the tab shows when nothing needs attention. */
export function setBaseTitle(title: string): void {
  baseTitle = title;
  render();
}

export function notificationsSupported(): boolean {
  return typeof window !== "undefined" && "Notification" in window;
}

/**
 * Asks for permission to notify. Browsers allow the prompt only from a user
 * gesture, so this is called from clicks (sending, starting a session).
 */
export function askNotificationPermission(): void {
  if (!notificationsSupported()) return;
  try {
    if (Notification.permission === "default") void Notification.requestPermission();
  } catch {
    // Old Safari: callback form only, or no permission API at all.
  }
}

/** Tells the user something happened, if they are not looking. */
export function attention(title: string, body: string, tag: string): void {
  if (document.visibilityState !== "hidden") return;
  unseen++;
  baseTitleFlash(title);
  if (notificationsSupported() && Notification.permission === "granted") {
    try {
      const n = new Notification(title, { body, tag, icon: "/icons/icon-192.png" });
      n.onclick = () => {
        window.focus();
        n.close();
      };
    } catch {
      // Android Chrome allows notifications only from a service worker.
    }
  }
}

function baseTitleFlash(title: string): void {
  document.title = `(${unseen}) ${title} · ${baseTitle}`;
}

if (typeof document !== "undefined") {
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      unseen = 0;
      render();
    }
  });
}
