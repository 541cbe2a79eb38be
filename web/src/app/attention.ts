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
    void showNotification(title, { body, tag, icon: "/icons/icon-192.png" });
  }
}

/** What `showNotification` needs of a service worker registration. */
export interface NotifyingRegistration {
  showNotification(title: string, options?: NotificationOptions): Promise<void>;
}

/**
 * Shows a notification with the page's `Notification` where the browser
 * allows it, else through the service worker (`/sw.js`): phone browsers
 * (Android Chrome) refuse the constructor and allow only that. Says which
 * way it went.
 */
export async function showNotification(
  title: string,
  options: NotificationOptions,
  page: typeof Notification | undefined = globalThis.Notification,
  worker: Promise<NotifyingRegistration | undefined> | undefined = serviceWorkerRegistration(),
): Promise<"page" | "worker" | "none"> {
  if (page) {
    try {
      const n = new page(title, options);
      n.onclick = () => {
        window.focus();
        n.close();
      };
      return "page";
    } catch {
      // Not allowed here: try the service worker.
    }
  }
  const registration = worker ? await worker.catch(() => undefined) : undefined;
  if (!registration) return "none";
  try {
    await registration.showNotification(title, options);
    return "worker";
  } catch {
    return "none";
  }
}

function serviceWorkerRegistration(): Promise<NotifyingRegistration | undefined> | undefined {
  if (typeof navigator === "undefined" || !("serviceWorker" in navigator)) return undefined;
  return navigator.serviceWorker.getRegistration().then((r) => r ?? undefined);
}

/**
 * Registers `/sw.js`, which only shows notifications and brings the app
 * back when one is tapped (it caches nothing). Browsers allow service
 * workers on https and on localhost only; elsewhere this does nothing.
 */
export function registerServiceWorker(): void {
  if (typeof navigator === "undefined" || !("serviceWorker" in navigator)) return;
  if (typeof window !== "undefined" && !window.isSecureContext) return;
  navigator.serviceWorker.register("/sw.js", { scope: "/" }).catch(() => {
    // Notifications then work where the page may show them itself.
  });
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
