// Per-repository queues: work on one repository runs in order, different repositories run freely.
// The queue itself lives with storage, which needs the same thing per blob.
export { KeyedLock } from '../storage/mutex.ts';
