// Small shared pieces: loading data into state, sizes, times, digests, copy buttons.
import { useEffect, useState, type DependencyList } from 'react';
import { ApiError } from './api.ts';

export type Async<T> = { state: 'loading' } | { state: 'done'; value: T } | { state: 'error'; error: ApiError | Error };

/** Runs `load` whenever `deps` change; results of superseded runs are dropped. */
export function useAsync<T>(load: () => Promise<T>, deps: DependencyList): Async<T> {
  const [result, setResult] = useState<Async<T>>({ state: 'loading' });
  useEffect(() => {
    let live = true;
    setResult({ state: 'loading' });
    load().then(
      (value) => { if (live) setResult({ state: 'done', value }); },
      (error: unknown) => { if (live) setResult({ state: 'error', error: error as Error }); },
    );
    return () => { live = false; };
  }, deps); // eslint-disable-line react-hooks/exhaustive-deps
  return result;
}

export function Failure({ error }: { error: Error }) {
  const status = error instanceof ApiError ? error.status : 0;
  const text = status === 401 ? 'Sign in to see this.' : status === 403 ? 'You may not see this.' : status === 404 ? 'Not found.' : error.message;
  return <p role="alert" className="error">{text}{status === 401 || status === 403 || status === 404 ? <span className="muted"> ({error.message})</span> : null}</p>;
}

export function Loading({ what }: { what: string }) {
  return <p className="muted" role="status">Loading {what}…</p>;
}

export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function formatTime(iso: string | number): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? '' : date.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

export function shortDigest(digest: string): string {
  const colon = digest.indexOf(':');
  return colon < 0 ? digest : `${digest.slice(0, colon + 1)}${digest.slice(colon + 1, colon + 13)}`;
}

export function CopyButton({ text, label }: { text: string; label: string }) {
  const [done, setDone] = useState(false);
  const copy = () => {
    navigator.clipboard?.writeText(text).then(() => {
      setDone(true);
      setTimeout(() => setDone(false), 1500);
    }, () => undefined);
  };
  return <button type="button" className="small" onClick={copy} aria-label={label}>{done ? 'Copied' : 'Copy'}</button>;
}
