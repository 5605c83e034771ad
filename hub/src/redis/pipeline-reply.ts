/** What ioredis' `pipeline().exec()` resolves to: one `[error, reply]` per command, in order. */
export type PipelineReplies = Array<[Error | null, unknown]> | null;

/** Reply `index` of a pipeline; thrown when Redis answered that command with an error. */
export function pipelineReply<T>(replies: PipelineReplies, index: number): T | undefined {
  const [err, reply] = replies?.[index] ?? [null, undefined];
  if (err) throw err;
  return reply as T | undefined;
}
