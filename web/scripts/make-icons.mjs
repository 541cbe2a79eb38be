// Renders the app icons (public/icons/*.png) from their SVG sources with the
// system's Chromium. Run after changing icon.svg or icon-maskable.svg:
//   npm run icons
// The PNGs are committed: they are sources of the web app manifest, not
// build output.

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { launch } from "../tests/support/browser.mjs";

const icons = resolve(fileURLToPath(new URL(".", import.meta.url)), "../public/icons");

const targets = [
  { svg: "icon.svg", png: "icon-192.png", size: 192 },
  { svg: "icon.svg", png: "icon-512.png", size: 512 },
  { svg: "icon-maskable.svg", png: "icon-maskable-512.png", size: 512 },
  // iOS rounds the corners itself: give it the full-bleed square.
  { svg: "icon-maskable.svg", png: "apple-touch-icon.png", size: 180 },
];

const browser = await launch();
try {
  for (const { svg, png, size } of targets) {
    const page = await browser.newPage({ viewport: { width: size, height: size }, deviceScaleFactor: 1 });
    const source = readFileSync(resolve(icons, svg), "utf8");
    await page.setContent(
      `<html><body style="margin:0;background:transparent">` +
        `<img src="data:image/svg+xml;base64,${Buffer.from(source).toString("base64")}" width="${size}" height="${size}" style="display:block">` +
        `</body></html>`,
    );
    await page.locator("img").evaluate((img) => img.decode());
    await page.screenshot({ path: resolve(icons, png), omitBackground: true });
    await page.close();
    console.log(`wrote public/icons/${png}`);
  }
} finally {
  await browser.close();
}
