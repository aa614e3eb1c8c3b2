/**
 * Undo steps registered as things are made, run in reverse order exactly once — on success, on error
 * and on Ctrl-C alike. A failing step does not stop the ones after it; the first failure is rethrown.
 */
export class Cleanup {
  private readonly steps: { what: string; undo: () => Promise<void> }[] = [];
  private running: Promise<void> | null = null;

  add(what: string, undo: () => Promise<void>): void {
    if (this.running) throw new Error(`cleanup already started; cannot register "${what}"`);
    this.steps.push({ what, undo });
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      const failures: Error[] = [];
      for (const step of this.steps.reverse()) {
        try {
          await step.undo();
        } catch (error) {
          failures.push(new Error(`cleanup: ${step.what}: ${(error as Error).message}`));
        }
      }
      if (failures.length > 0) throw failures[0];
    })();
    return this.running;
  }
}
