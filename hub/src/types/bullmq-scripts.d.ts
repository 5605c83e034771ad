/** BullMQ's compiled Lua scripts (includes resolved), as the bullmq package ships them. */
declare module 'bullmq/dist/cjs/scripts/moveToActive-11.js' {
  export const moveToActive: { name: string; content: string; keys: number };
}
declare module 'bullmq/dist/cjs/scripts/moveToFinished-14.js' {
  export const moveToFinished: { name: string; content: string; keys: number };
}
declare module 'bullmq/dist/cjs/scripts/removeJob-2.js' {
  export const removeJob: { name: string; content: string; keys: number };
}
declare module 'bullmq/dist/cjs/scripts/updateProgress-3.js' {
  export const updateProgress: { name: string; content: string; keys: number };
}
