// Chromium from the system (Debian's /usr/bin/chromium), driven by
// playwright-core: no browser download. Each launch gets a fresh profile.

import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = fileURLToPath(new URL(".", import.meta.url));
export const SCREENSHOTS = resolve(here, "../../../artifacts/screenshots");

export function chromiumPath() {
  const candidates = [process.env.CHROMIUM, "/usr/bin/chromium", "/usr/bin/chromium-browser"].filter(Boolean);
  const found = candidates.find((p) => existsSync(p));
  if (!found) throw new Error("Chromium not found: install it (`apt-get install chromium`) or set CHROMIUM");
  return found;
}

export async function launch() {
  return chromium.launch({
    executablePath: chromiumPath(),
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-dev-shm-usage",
    ],
  });
}

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/**
 * A fresh context and page. Page errors fail the test (collected in
 * `page.errors`); `Notification` is replaced by a recorder
 * (`window.__notifications`) that is granted, and `window.__sockets` keeps
 * every WebSocket the page opens so a test can drop one.
 */
export async function newPage(browser, { viewport = DESKTOP, colorScheme = "light" } = {}) {
  const context = await browser.newContext({ viewport, colorScheme, deviceScaleFactor: 1 });
  await context.addInitScript(() => {
    window.__notifications = [];
    class FakeNotification {
      static permission = "granted";
      static requestPermission() {
        return Promise.resolve("granted");
      }
      constructor(title, options = {}) {
        this.title = title;
        this.body = options.body;
        window.__notifications.push({ title, body: options.body, tag: options.tag });
      }
      close() {}
    }
    window.Notification = FakeNotification;

    window.__sockets = [];
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        window.__sockets.push(this);
      }
    };

    // Lets a test pretend the tab is in the background.
    window.__setHidden = (hidden) => {
      Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (hidden ? "hidden" : "visible") });
      Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
      document.dispatchEvent(new Event("visibilitychange"));
    };
  });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(e.message));
  page.on("console", (m) => {
    // The browser logs refused requests (a wrong secret's 401, a blocked
    // ticket while testing reconnects) by itself: those are expected.
    if (m.type() === "error" && !/Failed to load resource|WebSocket connection to/.test(m.text())) {
      page.errors.push(`console: ${m.text()}`);
    }
  });
  return { context, page };
}

let shotIndex = 0;
/** Saves `artifacts/screenshots/NAME-WIDTHxHEIGHT-SCHEME.png`. */
export async function screenshot(page, name, { fullPage = false } = {}) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const vp = page.viewportSize();
  const scheme = await page.evaluate(() => document.documentElement.dataset.theme ?? "light");
  const file = join(SCREENSHOTS, `${name}-${vp.width}x${vp.height}-${scheme}.png`);
  await page.screenshot({ path: file, fullPage, animations: "disabled", caret: "hide" });
  shotIndex++;
  return file;
}

/**
 * Screenshots of the current screen at desktop and phone widths, light and
 * dark. `prepare(page)` restores the screen after a resize if needed.
 */
export async function screenshotAll(page, name, { prepare } = {}) {
  const original = page.viewportSize();
  for (const viewport of [DESKTOP, PHONE]) {
    await page.setViewportSize(viewport);
    for (const scheme of ["light", "dark"]) {
      await page.evaluate((s) => {
        document.documentElement.dataset.theme = s;
        document.documentElement.style.colorScheme = s;
      }, scheme);
      if (prepare) await prepare(page, viewport, scheme);
      await page.waitForTimeout(60);
      await screenshot(page, name);
    }
  }
  await page.setViewportSize(original);
  await page.evaluate(() => {
    const t = localStorage.getItem("tether.theme");
    if (t) document.documentElement.dataset.theme = t;
    else delete document.documentElement.dataset.theme;
  });
}
