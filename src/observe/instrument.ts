// Times every method called on an object from outside (e.g. the metadata store), without touching
// its code: a Proxy whose methods run the real ones bound to the real object, so the object's
// calls to itself are not timed twice. Works for synchronous methods and for ones returning promises.

export interface OperationTimer {
  observe(seconds: number): void;
}

export function timeMethods<T extends object>(target: T, timerFor: (operation: string) => OperationTimer): T {
  const wrapped = new Map<PropertyKey, unknown>();
  return new Proxy(target, {
    get(object, property) {
      const value: unknown = Reflect.get(object, property, object);
      if (typeof value !== 'function' || typeof property !== 'string' || property === 'constructor') return value;
      let method = wrapped.get(property);
      if (!method) {
        const timer = timerFor(property);
        const original = value as (...args: unknown[]) => unknown;
        method = function timed(...args: unknown[]): unknown {
          const started = performance.now();
          const result = original.apply(object, args);
          if (result instanceof Promise) {
            const done = () => timer.observe((performance.now() - started) / 1000);
            result.then(done, done);
          } else {
            timer.observe((performance.now() - started) / 1000);
          }
          return result;
        };
        wrapped.set(property, method);
      }
      return method;
    },
  });
}
