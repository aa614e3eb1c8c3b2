/**
 * Drives `workload-api-client.mjs` in a child process running as a chosen uid, so the Workload API
 * sees a caller of that user through SO_PEERCRED. Each call or stream is answered through its own
 * queue; `next` waits for a stream's next message within a bound instead of sleeping.
 */
import { spawn } from "node:child_process";
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const SCRIPT = fileURLToPath(new URL("./workload-api-client.mjs", import.meta.url));

export type Reply =
  | { readonly message: Record<string, unknown> }
  | { readonly error: { readonly code: number; readonly details: string } }
  | { readonly end: true };

export interface WorkloadStream {
  /** The stream's next reply, or a failure naming `what` after `timeoutMs`. */
  next(what: string, timeoutMs?: number): Promise<Reply>;
  cancel(): void;
}

export class WorkloadApiClientProcess {
  private readonly queues = new Map<number, { replies: Reply[]; waiting: ((r: Reply) => void) | null }>();
  private sequence = 0;
  private readonly exited: Promise<void>;

  private constructor(private readonly child: ChildProcessWithoutNullStreams) {
    createInterface({ input: child.stdout }).on("line", (line) => {
      const { id, ...reply } = JSON.parse(line) as { id: number } & Reply;
      const queue = this.queues.get(id);
      if (!queue) return;
      if (queue.waiting) {
        const resolve = queue.waiting;
        queue.waiting = null;
        resolve(reply);
      } else queue.replies.push(reply);
    });
    this.exited = new Promise((resolve) => child.once("exit", () => resolve()));
  }

  /** A client process connecting to `socketPath` as `uid` (and gid). */
  static start(socketPath: string, uid: number, gid = uid): WorkloadApiClientProcess {
    const child = spawn(process.execPath, [SCRIPT, socketPath], { uid, gid, stdio: "pipe" });
    child.stderr.resume();
    return new WorkloadApiClientProcess(child);
  }

  private send(command: Record<string, unknown>): number {
    const id = ++this.sequence;
    this.queues.set(id, { replies: [], waiting: null });
    this.child.stdin.write(`${JSON.stringify({ id, ...command })}\n`);
    return id;
  }

  private take(id: number, what: string, timeoutMs: number): Promise<Reply> {
    const queue = this.queues.get(id);
    if (!queue) throw new Error(`no call ${id}`);
    const ready = queue.replies.shift();
    if (ready) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        queue.waiting = null;
        reject(new Error(`${what}: no reply within ${timeoutMs} ms`));
      }, timeoutMs);
      queue.waiting = (reply) => {
        clearTimeout(timer);
        resolve(reply);
      };
    });
  }

  /** One unary call; `header: false` leaves out the security header. */
  call(rpc: string, request: Record<string, unknown> = {}, header = true): Promise<Reply> {
    return this.take(this.send({ rpc, request, header }), rpc, 25_000);
  }

  stream(rpc: string, header = true): WorkloadStream {
    const id = this.send({ rpc, request: {}, header });
    return {
      next: (what, timeoutMs = 15_000) => this.take(id, `${rpc} ${what}`, timeoutMs),
      cancel: () => {
        this.child.stdin.write(`${JSON.stringify({ cancel: id })}\n`);
      },
    };
  }

  async close(): Promise<void> {
    this.child.stdin.end();
    const killer = setTimeout(() => this.child.kill("SIGKILL"), 5_000);
    await this.exited;
    clearTimeout(killer);
  }
}

/** The message of a reply, or a failure saying what came instead. */
export function messageOf(reply: Reply): Record<string, unknown> {
  if ("message" in reply) return reply.message;
  throw new Error(`expected a message, got ${JSON.stringify(reply)}`);
}

/** The gRPC status code of a refused call (undefined when it was answered). */
export function codeOf(reply: Reply): number | undefined {
  return "error" in reply ? reply.error.code : undefined;
}
