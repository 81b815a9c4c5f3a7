/**
 * Serialises async work per key inside one process. Writes to one user go
 * through it so the read-merge-write of an upsert never interleaves with another
 * in the same process: it saves the conditional update's retries (MongoDB, and our
 * FerretDB build, apply it atomically); on upstream FerretDB (no compare-and-set) it is
 * what keeps two requests of one process from erasing each other's change.
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<unknown>>();

  async run<T>(key: string, work: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const current = previous.then(work, work);
    const tail = current.catch(() => undefined);
    this.tails.set(key, tail);
    try {
      return await current;
    } finally {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }

  get size(): number {
    return this.tails.size;
  }
}
