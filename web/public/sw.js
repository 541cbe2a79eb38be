// Tether's service worker: it exists so that phone browsers, which allow
// notifications only from a service worker, can show them, and so that
// tapping one brings the app back. It caches nothing and handles no fetch:
// the app is always loaded from the host.

self.addEventListener("install", () => {
  self.skipWaiting();
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(
    (async () => {
      const open = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const client = open.find((c) => new URL(c.url).origin === self.location.origin);
      if (client) {
        await client.focus();
      } else {
        await self.clients.openWindow("/");
      }
    })(),
  );
});
