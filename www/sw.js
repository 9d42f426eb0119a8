// Service worker: keeps the page itself (HTML, modules, wasm, demo files) so that a second visit works offline.
// Network first, so a new build is picked up at once when online; the cache answers when the network does not.
// The model files (the default EfficientAT mn04, and aisfx CNN14 for banks fitted with it) are not handled here:
// the analysis worker caches each one itself when it first needs it (Cache API, versioned by build.json) and
// reads it from there without asking the network.

// v2: the default model and demo bank changed (EfficientAT mn04); the shell of earlier versions is dropped.
const SHELL = "sonomaly-shell-v2";

// Kept at install, so that even the second visit works offline.
const PRECACHE = [
  "./", "index.html", "style.css", "main.js", "render.js", "audio.js", "decode.js", "store.js", "messages.js",
  "worker.js", "engine.js", "state.js", "recorder-worklet.js",
  "pkg/sonomaly.js", "pkg/sonomaly_bg.wasm", "build.json", "demo/fan-demo.bank", "demo/fan-normal.wav",
  "demo/fan-abnormal.wav", "demo/LICENSE.md",
];

self.addEventListener("install", (ev) => {
  self.skipWaiting();
  ev.waitUntil(
    caches.open(SHELL).then((cache) =>
      Promise.all(PRECACHE.map((p) => cache.add(p).catch(() => console.warn("sonomaly: not kept offline:", p))))),
  );
});
self.addEventListener("activate", (ev) =>
  ev.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("sonomaly-shell-") && k !== SHELL).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  ));

self.addEventListener("fetch", (ev) => {
  const req = ev.request;
  const url = new URL(req.url);
  if (req.method !== "GET" || url.origin !== self.location.origin || url.pathname.includes("/models/")) return;
  ev.respondWith(
    (async () => {
      const cache = await caches.open(SHELL);
      try {
        const res = await fetch(req);
        if (res.ok && res.type === "basic") cache.put(req, res.clone()).catch(() => {});
        return res;
      } catch (e) {
        const hit = await cache.match(req, { ignoreSearch: true });
        if (hit) return hit;
        throw e;
      }
    })(),
  );
});
