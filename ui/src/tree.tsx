// An accessible, lazily expanded, virtualized tree (WAI-ARIA tree pattern, flat form: every
// treeitem carries aria-level, aria-setsize and aria-posinset, so only the rows in view are in the
// DOM and 10,000 entries render as fast as 30). Keys: Up/Down, Home/End, Right (expand, then first
// child), Left (collapse, then parent), Enter (open), * (expand siblings).
import { useCallback, useEffect, useMemo, useRef, useState, type KeyboardEvent, type ReactNode } from 'react';
import { useVirtualizer } from '@tanstack/react-virtual';

export interface TreeNode {
  id: string;
  label: ReactNode;
  /** Text for type-ahead (the accessible name is the label's text). */
  text: string;
  expandable: boolean;
}

interface Row {
  node: TreeNode;
  level: number;
  posinset: number;
  setsize: number;
  parent: string | undefined;
}

type Children = TreeNode[] | 'loading' | { error: string };

export interface TreeProps {
  label: string;
  roots: TreeNode[];
  loadChildren(node: TreeNode): Promise<TreeNode[]>;
  /** Opens a node (Enter or a click); returning false toggles it instead. */
  onOpen?(node: TreeNode): boolean;
  /** Pixel height of the scrolling area. */
  height?: number;
  rowHeight?: number;
  /** Ids to expand at start. */
  initiallyExpanded?: string[];
  testId?: string;
}

export function Tree({ label, roots, loadChildren, onOpen, height = 480, rowHeight = 30, initiallyExpanded = [], testId }: TreeProps) {
  const [expanded, setExpanded] = useState<Set<string>>(() => new Set(initiallyExpanded));
  const [children, setChildren] = useState<Map<string, Children>>(() => new Map());
  const [focused, setFocused] = useState<string | undefined>(undefined);
  const scroller = useRef<HTMLDivElement>(null);
  const focusPending = useRef(false);

  const load = useCallback((node: TreeNode) => {
    setChildren((map) => {
      if (map.has(node.id)) return map;
      loadChildren(node).then(
        (nodes) => setChildren((m) => new Map(m).set(node.id, nodes)),
        (err: unknown) => setChildren((m) => new Map(m).set(node.id, { error: (err as Error).message })),
      );
      return new Map(map).set(node.id, 'loading');
    });
  }, [loadChildren]);

  useEffect(() => {
    for (const id of initiallyExpanded) {
      const node = roots.find((r) => r.id === id);
      if (node) load(node);
    }
    // only at start and when roots arrive
  }, [roots]); // eslint-disable-line react-hooks/exhaustive-deps

  const rows = useMemo(() => {
    const out: Row[] = [];
    const walk = (nodes: TreeNode[], level: number, parent: string | undefined) => {
      nodes.forEach((node, i) => {
        out.push({ node, level, posinset: i + 1, setsize: nodes.length, parent });
        const kids = expanded.has(node.id) ? children.get(node.id) : undefined;
        if (Array.isArray(kids)) walk(kids, level + 1, node.id);
      });
    };
    walk(roots, 1, undefined);
    return out;
  }, [roots, expanded, children]);

  const virtualizer = useVirtualizer({ count: rows.length, getScrollElement: () => scroller.current, estimateSize: () => rowHeight, overscan: 12 });
  const focusIndex = Math.max(0, rows.findIndex((r) => r.node.id === focused));
  const activeId = rows[focusIndex]?.node.id;

  useEffect(() => {
    if (!focusPending.current || !activeId) return;
    focusPending.current = false;
    scroller.current?.querySelector<HTMLElement>(`[data-id="${CSS.escape(activeId)}"]`)?.focus();
  });

  const moveTo = (index: number) => {
    const row = rows[Math.max(0, Math.min(rows.length - 1, index))];
    if (!row) return;
    focusPending.current = true;
    setFocused(row.node.id);
    virtualizer.scrollToIndex(rows.indexOf(row));
  };

  const toggle = (node: TreeNode, open: boolean) => {
    setExpanded((set) => {
      const next = new Set(set);
      if (open) next.add(node.id);
      else next.delete(node.id);
      return next;
    });
    if (open) load(node);
  };

  const activate = (node: TreeNode) => {
    if (onOpen?.(node)) return;
    if (node.expandable) toggle(node, !expanded.has(node.id));
  };

  const onKeyDown = (event: KeyboardEvent<HTMLDivElement>, row: Row, index: number) => {
    const { node } = row;
    const isOpen = expanded.has(node.id);
    switch (event.key) {
      case 'ArrowDown': moveTo(index + 1); break;
      case 'ArrowUp': moveTo(index - 1); break;
      case 'Home': moveTo(0); break;
      case 'End': moveTo(rows.length - 1); break;
      case 'ArrowRight':
        if (node.expandable && !isOpen) toggle(node, true);
        else if (node.expandable && rows[index + 1]?.parent === node.id) moveTo(index + 1);
        break;
      case 'ArrowLeft':
        if (node.expandable && isOpen) toggle(node, false);
        else if (row.parent) moveTo(rows.findIndex((r) => r.node.id === row.parent));
        break;
      case 'Enter':
        activate(node);
        break;
      case '*':
        for (const sibling of rows.filter((r) => r.parent === row.parent && r.node.expandable)) toggle(sibling.node, true);
        break;
      default: {
        if (event.key.length !== 1 || event.ctrlKey || event.metaKey || event.altKey) return;
        const key = event.key.toLowerCase();
        const after = [...rows.slice(index + 1), ...rows.slice(0, index + 1)];
        const found = after.find((r) => r.node.text.toLowerCase().startsWith(key));
        if (found) moveTo(rows.indexOf(found));
        else return;
      }
    }
    event.preventDefault();
  };

  return (
    <div ref={scroller} className="tree-scroll" style={{ height: Math.min(height, virtualizer.getTotalSize() + 2) }} data-testid={testId}>
      <div role="tree" aria-label={label} className="tree" style={{ height: virtualizer.getTotalSize() }}>
        {virtualizer.getVirtualItems().map((item) => {
          const row = rows[item.index]!;
          const { node } = row;
          const isOpen = expanded.has(node.id);
          const state = children.get(node.id);
          return (
            <div
              key={node.id}
              role="treeitem"
              data-id={node.id}
              aria-level={row.level}
              aria-setsize={row.setsize}
              aria-posinset={row.posinset}
              aria-expanded={node.expandable ? isOpen : undefined}
              aria-busy={isOpen && state === 'loading' ? true : undefined}
              data-name={node.text}
              tabIndex={node.id === activeId ? 0 : -1}
              className="tree-row"
              style={{ transform: `translateY(${item.start}px)`, height: rowHeight, paddingLeft: `${(row.level - 1) * 1.25 + 0.25}rem` }}
              onKeyDown={(e) => onKeyDown(e, row, item.index)}
              onFocus={() => setFocused(node.id)}
              onClick={() => activate(node)}
            >
              {node.expandable ? (
                <span className="twisty" aria-hidden="true" onClick={(e) => { e.stopPropagation(); setFocused(node.id); toggle(node, !isOpen); }}>{isOpen ? '▾' : '▸'}</span>
              ) : <span className="twisty" aria-hidden="true" />}
              <span className="tree-label">{node.label}</span>
              {isOpen && state === 'loading' && <span className="muted"> loading…</span>}
              {isOpen && state && typeof state === 'object' && !Array.isArray(state) && <span className="error"> {state.error}</span>}
              {isOpen && Array.isArray(state) && state.length === 0 && <span className="muted"> (none)</span>}
            </div>
          );
        })}
      </div>
    </div>
  );
}
