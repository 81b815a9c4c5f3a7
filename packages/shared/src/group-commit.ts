/**
 * Coalesces concurrent calls into batches (group commit): while one batch is
 * being written, new items wait; when it ends, all of them go in the next one.
 * No timer: at low load an item is written alone and at once, under load the
 * batches grow with it. Each caller learns its own batch's outcome, or its own
 * item's when `write` returns one per item (an array, in the items' order:
 * `undefined` for an item written, its error otherwise).
 */
export class GroupCommit<T> {
  private queued: { item: T; resolve: () => void; reject: (err: unknown) => void }[] = [];
  private running = false;

  constructor(
    private readonly write: (items: T[]) => Promise<void | readonly unknown[]>,
    private readonly maxBatch = 200,
  ) {}

  push(item: T): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queued.push({ item, resolve, reject });
      if (!this.running) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.running = true;
    // Callers in the same tick (a sweep, a burst of requests) join the first batch.
    await Promise.resolve();
    while (this.queued.length > 0) {
      const batch = this.queued.splice(0, this.maxBatch);
      try {
        const errors = await this.write(batch.map((b) => b.item));
        batch.forEach((b, i) => {
          const err = errors?.[i];
          if (err === undefined) b.resolve();
          else b.reject(err);
        });
      } catch (err) {
        for (const b of batch) b.reject(err);
      }
    }
    this.running = false;
  }
}
