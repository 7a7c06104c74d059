// The house rules of src/ (docs/architecture.md), checked on the code itself so that a change
// breaking one fails here instead of waiting for a reviewer: folders import each other without
// cycles; SQL and the database drivers stay in src/metadata/; HTTP status codes are chosen only in
// src/registry/; a storage or metadata engine is named only inside its own folder; no function
// runs over 300 lines.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import ts from 'typescript';

const ROOT = resolve(import.meta.dirname, '..');
const SRC = join(ROOT, 'src');
const MAX_FUNCTION_LINES = 300;

interface SourceFile {
  /** Path under src/, e.g. "registry/server.ts". */
  path: string;
  /** First path segment: the domain folder ("main.ts" for the executable's entry). */
  folder: string;
  text: string;
  tree: ts.SourceFile;
}

function sourceFiles(dir = SRC): SourceFile[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    if (!entry.name.endsWith('.ts')) return [];
    const path = relative(SRC, full);
    const text = readFileSync(full, 'utf8');
    return [{ path, folder: path.split('/')[0]!, text, tree: ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true) }];
  });
}

const FILES = sourceFiles();

function visit(node: ts.Node, each: (node: ts.Node) => void): void {
  each(node);
  node.forEachChild((child) => visit(child, each));
}

/** Every module a file imports or re-exports, statically or with import(). */
function importedModules(file: SourceFile): string[] {
  const modules: string[] = [];
  visit(file.tree, (node) => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      modules.push(node.moduleSpecifier.text);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments[0] && ts.isStringLiteral(node.arguments[0])) {
      modules.push(node.arguments[0].text);
    }
  });
  return modules;
}

/** Relative imports as paths under src/ ("metadata/index.ts"). */
function importedSourcePaths(file: SourceFile): string[] {
  return importedModules(file)
    .filter((m) => m.startsWith('.'))
    .map((m) => relative(SRC, resolve(SRC, dirname(file.path), m)));
}

function where(file: SourceFile, node: ts.Node): string {
  return `src/${file.path}:${file.tree.getLineAndCharacterOfPosition(node.getStart()).line + 1}`;
}

test('folders under src/ import each other without a cycle', () => {
  const edges = new Map<string, Set<string>>();
  for (const file of FILES) {
    for (const target of importedSourcePaths(file)) {
      const to = target.split('/')[0]!;
      if (to === file.folder || to.startsWith('..')) continue;
      if (!edges.has(file.folder)) edges.set(file.folder, new Set());
      edges.get(file.folder)!.add(to);
    }
  }
  // Depth-first search; a folder met again while still on the path closes a cycle.
  const done = new Set<string>();
  const cycles: string[] = [];
  const walk = (folder: string, path: string[]): void => {
    if (path.includes(folder)) {
      cycles.push([...path.slice(path.indexOf(folder)), folder].join(' → '));
      return;
    }
    if (done.has(folder)) return;
    for (const next of edges.get(folder) ?? []) walk(next, [...path, folder]);
    done.add(folder);
  };
  for (const folder of edges.keys()) walk(folder, []);
  assert.deepEqual(cycles, []);
  // The check itself sees imports: the server's folder depends on the content model.
  assert.ok(edges.get('registry')?.has('content'), 'the import graph was not read');
});

const SQL = /\b(SELECT\b[\s\S]+\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|UNIQUE\s+INDEX))\b/;

test('SQL statements and database drivers only in src/metadata/', () => {
  const found: string[] = [];
  for (const file of FILES) {
    if (file.folder === 'metadata') continue;
    for (const module of importedModules(file)) {
      if (module === 'node:sqlite' || module === 'pg' || module.startsWith('pg-')) found.push(`src/${file.path} imports ${module}`);
    }
    visit(file.tree, (node) => {
      if ((ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node) || ts.isTemplateHead(node)) && SQL.test(node.text)) {
        found.push(`${where(file, node)}: ${node.text.slice(0, 60)}`);
      }
    });
  }
  assert.deepEqual(found, []);
  assert.ok(FILES.some((f) => f.folder === 'metadata' && f.text.match(SQL)), 'the SQL pattern matches nothing in src/metadata');
});

/** A numeric literal given as an HTTP status: an OciError's first argument, writeHead's, statusCode = … */
function statusLiterals(file: SourceFile): string[] {
  const found: string[] = [];
  visit(file.tree, (node) => {
    let status: ts.Node | undefined;
    if (ts.isNewExpression(node) && node.expression.getText() === 'OciError') status = node.arguments?.[0];
    else if (ts.isCallExpression(node) && /(^|\.)(writeHead|many)$/.test(node.expression.getText()) && node.expression.getText() !== 'ContentError.many') status = node.arguments[0];
    else if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.EqualsToken && /\.statusCode$/.test(node.left.getText())) status = node.right;
    if (status && ts.isNumericLiteral(status)) found.push(`${where(file, node)}: ${node.getText().slice(0, 60)}`);
  });
  return found;
}

test('HTTP status codes are chosen only in src/registry/', () => {
  const outside = FILES.filter((f) => f.folder !== 'registry').flatMap(statusLiterals);
  assert.deepEqual(outside, []);
  assert.ok(FILES.filter((f) => f.folder === 'registry').flatMap(statusLiterals).length > 10, 'the status check finds none in src/registry');
});

test('storage and metadata engines are named only inside their own folder', () => {
  const engines: Record<string, RegExp> = {
    metadata: /^metadata\/(sqlite|postgres)[\w-]*\.ts$/,
    storage: /^storage\/(filesystem|s3)\.ts$/,
  };
  const found: string[] = [];
  for (const file of FILES) {
    for (const target of importedSourcePaths(file)) {
      for (const [folder, engine] of Object.entries(engines)) {
        if (file.folder !== folder && engine.test(target)) found.push(`src/${file.path} imports src/${target}`);
      }
    }
    for (const module of importedModules(file)) {
      if (module.startsWith('@aws-sdk/') && file.folder !== 'storage') found.push(`src/${file.path} imports ${module}`);
    }
  }
  assert.deepEqual(found, []);
});

test(`no function in src/ is longer than ${MAX_FUNCTION_LINES} lines`, () => {
  const long: string[] = [];
  let functions = 0;
  for (const file of FILES) {
    visit(file.tree, (node) => {
      if (!ts.isFunctionLike(node) || !('body' in node) || !node.body) return;
      functions++;
      const first = file.tree.getLineAndCharacterOfPosition(node.getStart()).line;
      const last = file.tree.getLineAndCharacterOfPosition(node.getEnd()).line;
      if (last - first + 1 > MAX_FUNCTION_LINES) long.push(`${where(file, node)}: ${last - first + 1} lines`);
    });
  }
  assert.deepEqual(long, []);
  assert.ok(functions > 500, `only ${functions} functions were found`);
});
