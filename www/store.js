// The last fitted bank, kept in IndexedDB so that a reload loses nothing.

const DB = "sonomaly";
const STORE = "banks";
const KEY = "last-fitted";

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function tx(mode, fn) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const t = db.transaction(STORE, mode);
      const req = fn(t.objectStore(STORE));
      t.oncomplete = () => resolve(req && req.result);
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error);
    });
  } finally {
    db.close();
  }
}

// {bytes: Uint8Array, name, savedAt} or undefined.
export async function loadLastBank() {
  try {
    return await tx("readonly", (s) => s.get(KEY));
  } catch (e) {
    console.warn("sonomaly: IndexedDB unavailable", e);
    return undefined;
  }
}

export async function saveLastBank(bytes, name) {
  await tx("readwrite", (s) => s.put({ bytes, name, savedAt: new Date().toISOString() }, KEY));
}
