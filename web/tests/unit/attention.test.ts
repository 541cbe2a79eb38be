import { describe, expect, it } from "vitest";

import { type NotifyingRegistration, showNotification } from "../../src/app/attention";

function recordingRegistration(shown: string[]): NotifyingRegistration {
  return {
    showNotification: async (title: string) => {
      shown.push(title);
    },
  };
}

describe("notifications", () => {
  it("use the page's Notification where the browser allows it", async () => {
    const made: string[] = [];
    class Page {
      onclick: (() => void) | null = null;
      constructor(title: string) {
        made.push(title);
      }
      close(): void {}
    }
    const shown: string[] = [];
    const way = await showNotification(
      "Permission needed",
      { body: "bash" },
      Page as unknown as typeof Notification,
      Promise.resolve(recordingRegistration(shown)),
    );
    expect(way).toBe("page");
    expect(made).toEqual(["Permission needed"]);
    expect(shown).toEqual([]);
  });

  it("go through the service worker where the constructor is refused (Android)", async () => {
    class Refusing {
      constructor() {
        throw new TypeError("Illegal constructor. Use ServiceWorkerRegistration.showNotification() instead.");
      }
    }
    const shown: string[] = [];
    const way = await showNotification(
      "Answer complete",
      { body: "done" },
      Refusing as unknown as typeof Notification,
      Promise.resolve(recordingRegistration(shown)),
    );
    expect(way).toBe("worker");
    expect(shown).toEqual(["Answer complete"]);
  });

  it("say so when neither way is there", async () => {
    expect(await showNotification("x", {}, undefined, undefined)).toBe("none");
    expect(await showNotification("x", {}, undefined, Promise.resolve(undefined))).toBe("none");
    expect(await showNotification("x", {}, undefined, Promise.reject(new Error("no sw")))).toBe("none");
  });
});
