import { useEffect } from "preact/hooks";

import { dismissToast, drawerOpen, route, secret, theme, toasts } from "../app/store";
import { ChatPage } from "./Chat";
import { ConnectionBanner } from "./common";
import { ConfirmDialog, NewSessionDialog } from "./Dialogs";
import { IconX } from "./icons";
import { MachinesPage } from "./Machines";
import { PairPage } from "./Pair";
import { SessionsPage, WorkerPage } from "./Sessions";
import { Sidebar } from "./Sidebar";
import { SignIn } from "./SignIn";

function useTheme() {
  const t = theme.value;
  useEffect(() => {
    document.documentElement.dataset.theme = t;
    document.documentElement.style.colorScheme = t;
    const meta = document.querySelector<HTMLMetaElement>('meta[name="theme-color"]:not([media])');
    if (meta) meta.content = t === "dark" ? "#111114" : "#ffffff";
  }, [t]);
}

function Screen() {
  const r = route.value;
  switch (r.name) {
    case "machines":
      return <MachinesPage />;
    case "sessions":
      return <SessionsPage />;
    case "pair":
      return <PairPage code={r.code} />;
    case "worker":
      return <WorkerPage workerId={r.workerId} />;
    case "session":
      return <ChatPage sessionId={r.sessionId} />;
  }
}

function Toasts() {
  const list = toasts.value;
  return (
    <div class="toasts" aria-live="polite">
      {list.map((t) => (
        <div key={t.id} class={`toast toast-${t.kind}`} role={t.kind === "error" ? "alert" : "status"}>
          <span>{t.text}</span>
          <button type="button" class="icon-btn" aria-label="Dismiss" onClick={() => dismissToast(t.id)}>
            <IconX size={14} />
          </button>
        </div>
      ))}
    </div>
  );
}

export function App() {
  useTheme();
  if (!secret.value) return <SignIn />;
  const open = drawerOpen.value;
  return (
    <div class="shell" data-drawer={open ? "open" : "closed"}>
      <Sidebar />
      <div class="backdrop" aria-hidden="true" onClick={() => (drawerOpen.value = false)} />
      <main class="main">
        <ConnectionBanner />
        <Screen />
      </main>
      <NewSessionDialog />
      <ConfirmDialog />
      <Toasts />
    </div>
  );
}
