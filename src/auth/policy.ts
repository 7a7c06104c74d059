// Who may do what where: per-repository-pattern policies, the most specific match wins, and a
// repository without a policy of its own inherits its nearest ancestor's (nested namespaces).
/** What a caller does to a repository. */
export type RepositoryAction = 'pull' | 'push' | 'delete';
export type PolicyAction = RepositoryAction | 'admin';
export const POLICY_ACTIONS: readonly PolicyAction[] = ['pull', 'push', 'delete', 'admin'];
const ALL: readonly RepositoryAction[] = ['pull', 'push', 'delete'];

/** A caller as policies see it. Anonymous callers have no name. */
export interface Principal {
  name?: string;
  groups: readonly string[];
}

export interface PolicyRule {
  users?: Record<string, PolicyAction[]>;
  groups?: Record<string, PolicyAction[]>;
  /** Everyone, signed in or not. */
  anonymous?: PolicyAction[];
  /** Every signed-in user and robot. */
  authenticated?: PolicyAction[];
}

interface CompiledRule {
  pattern: string;
  regex: RegExp;
  /** Characters that are not wildcards: more is more specific. */
  literal: number;
  wildcards: number;
  order: number;
  rule: PolicyRule;
}

function compile(pattern: string): RegExp {
  const parts = pattern.split('/').map((part) => {
    if (part === '**') return '[^/]+(?:/[^/]+)*';
    return part.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]*');
  });
  return new RegExp(`^${parts.join('/')}$`);
}

/** `a/b/c` → `a/b/c`, `a/b`, `a`. */
function selfAndAncestors(repository: string): string[] {
  const parts = repository.split('/');
  return parts.map((_, i) => parts.slice(0, parts.length - i).join('/'));
}

/** Who a rule lets pull (admins aside). No rule: nobody. */
function pullers(rule: PolicyRule | undefined): { anonymous: boolean; authenticated: boolean; users: Set<string>; groups: Set<string> } {
  const pulls = (actions: PolicyAction[] | undefined) => (actions ?? []).some((a) => a === 'pull' || a === 'admin');
  const named = (entries: Record<string, PolicyAction[]> | undefined) => new Set(Object.entries(entries ?? {}).filter(([, actions]) => pulls(actions)).map(([name]) => name));
  return { anonymous: pulls(rule?.anonymous), authenticated: pulls(rule?.authenticated), users: named(rule?.users), groups: named(rule?.groups) };
}

export class Policies {
  private readonly rules: CompiledRule[];
  private readonly admins: { users: Set<string>; groups: Set<string> };
  private readonly ruleCache = new Map<string, CompiledRule | undefined>();
  /** Whether anonymous callers hold any right anywhere (then `/v2/` and the catalog answer them). */
  readonly anonymousAnywhere: boolean;

  constructor(policies: Record<string, PolicyRule>, admins: { users?: string[]; groups?: string[] } = {}) {
    this.rules = Object.entries(policies).map(([pattern, rule], order) => ({
      pattern, rule, order, regex: compile(pattern),
      literal: pattern.replace(/\*/g, '').length, wildcards: (pattern.match(/\*/g) ?? []).length,
    }));
    // Most specific first: more literal characters, then fewer wildcards, then file order.
    this.rules.sort((a, b) => b.literal - a.literal || a.wildcards - b.wildcards || a.order - b.order);
    this.admins = { users: new Set(admins.users ?? []), groups: new Set(admins.groups ?? []) };
    this.anonymousAnywhere = this.rules.some((r) => (r.rule.anonymous ?? []).length > 0);
  }

  /** The pattern that governs `repository`, if any (for explanations and tests). */
  patternFor(repository: string): string | undefined {
    return this.ruleFor(repository)?.pattern;
  }

  private ruleFor(repository: string): CompiledRule | undefined {
    if (this.ruleCache.has(repository)) return this.ruleCache.get(repository);
    const names = selfAndAncestors(repository);
    const found = this.rules.find((r) => names.some((n) => r.regex.test(n)));
    if (this.ruleCache.size >= 10_000) this.ruleCache.clear();
    this.ruleCache.set(repository, found);
    return found;
  }

  isAdmin(principal: Principal): boolean {
    return principal.name !== undefined && (this.admins.users.has(principal.name) || principal.groups.some((g) => this.admins.groups.has(g)));
  }

  /**
   * Whether everyone who may pull `source` may pull `target` too (admins may pull both), judged
   * from the rules alone and on the safe side: a user named in `source`'s rule must be named in
   * `target`'s, and a group must be granted there as a group. The portable component index
   * publishes a repository's versions only when this holds for it.
   */
  pullersIncluded(source: string, target: string): boolean {
    const from = pullers(this.ruleFor(source)?.rule);
    const to = pullers(this.ruleFor(target)?.rule);
    if (to.anonymous) return true;
    if (from.anonymous) return false;
    if (to.authenticated) return true;
    if (from.authenticated) return false;
    return [...from.users].every((u) => to.users.has(u)) && [...from.groups].every((g) => to.groups.has(g));
  }

  /** The actions `principal` may take on `repository`. */
  rights(principal: Principal, repository: string): Set<RepositoryAction> {
    if (this.isAdmin(principal)) return new Set(ALL);
    const rule = this.ruleFor(repository)?.rule;
    const granted = new Set<RepositoryAction>();
    if (!rule) return granted;
    const add = (actions: PolicyAction[] | undefined) => {
      for (const action of actions ?? []) for (const a of action === 'admin' ? ALL : [action]) granted.add(a);
    };
    add(rule.anonymous);
    if (principal.name !== undefined) {
      add(rule.authenticated);
      add(rule.users?.[principal.name]);
      for (const group of principal.groups) add(rule.groups?.[group]);
    }
    return granted;
  }
}
