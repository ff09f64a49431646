import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { LifeboatMetrics } from '../../src/metrics/metrics.ts';
import { PROMETHEUS_RULE_FILE, prometheusRule, RULES_FILE } from '../../scripts/gen-prometheusrule.ts';
import { REPO } from '../support/lifeboat.ts';

interface Target {
  expr?: string;
  datasource?: { uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  gridPos?: { h: number; w: number; x: number; y: number };
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  title: string;
  uid: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: { name: string; type: string; query?: unknown; definition?: string }[] };
}

const dashboard = JSON.parse(readFileSync(path.join(REPO, 'deploy/grafana/lifeboat.json'), 'utf8')) as Dashboard;
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');
const rules = (parse(readFileSync(RULES_FILE, 'utf8')) as { groups: { rules: { alert: string; expr: string; annotations: Record<string, string> }[] }[] }).groups.flatMap((g) => g.rules);

/** What the daemon exports: every series name of a facade's render(), histograms with their _bucket, _sum and _count. */
async function exportedNames(): Promise<Set<string>> {
  const text = await new LifeboatMetrics({ cluster: 'c', node: 'n', version: '0' }).render();
  const names = new Set<string>();
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    if (type === 'histogram' || type === 'summary') {
      for (const suffix of ['_bucket', '_sum', '_count']) names.add(name! + suffix);
      if (type === 'summary') names.add(name!);
    } else {
      names.add(name!);
    }
  }
  return names;
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'offset', 'inf', 'nan']);

/**
 * The metric names a PromQL expression (or a Grafana label_values() query) selects. Strings,
 * label matchers, ranges, grouping label lists, numbers, durations, keywords, function names and
 * Grafana variables are not metric names.
 */
function metricNames(expr: string): string[] {
  const labelValues = /^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$/s.exec(expr);
  if (labelValues) return metricNames(labelValues[1]!);
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names: string[] = [];
  for (const m of stripped.matchAll(/\$\{?\w+\}?|\d[\d.]*(?:e[+-]?\d+)?[a-z]*|([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/gi)) {
    const [, ident, call] = m;
    if (!ident || call || KEYWORDS.has(ident.toLowerCase())) continue;
    names.push(ident);
  }
  return [...new Set(names)];
}

/** The PromQL inside an alert annotation's `query` template calls. */
function annotationQueries(annotations: Record<string, string>): string[] {
  return Object.values(annotations).flatMap((a) => [...a.matchAll(/printf\s+"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!));
}

test('metricNames finds the selected metrics and nothing else', () => {
  assert.deepEqual(
    metricNames('time() - max by (cluster) (lifeboat_backup_last_success_timestamp_seconds{cluster=~"$cluster"} > 0) > on (cluster) 2 * max(x_seconds offset 1h) and on (cluster, job) y_total'),
    ['lifeboat_backup_last_success_timestamp_seconds', 'x_seconds', 'y_total'],
  );
  assert.deepEqual(metricNames('histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="by (z)"}[$__rate_interval]))) < 1e9'), ['a_bucket']);
  assert.deepEqual(metricNames('sum(b) without (instance) * on (i) group_left (node, version) c'), ['b', 'c']);
  assert.deepEqual(metricNames('absent(up{job=~".*lifeboat.*"} == 1)'), ['up']);
  assert.deepEqual(metricNames('label_values(lifeboat_build_info, cluster)'), ['lifeboat_build_info']);
  assert.deepEqual(metricNames("max(m{cluster='%s',schedule='backup'})"), ['m']);
});

test('every metric in every dashboard panel and variable query is one the daemon exports', async () => {
  const exported = await exportedNames();
  const used = new Map<string, string>();
  for (const panel of panels) {
    for (const target of panel.targets ?? []) {
      for (const name of metricNames(target.expr ?? '')) used.set(name, panel.title);
    }
  }
  for (const variable of dashboard.templating.list) {
    const query = typeof variable.query === 'string' ? variable.query : (variable.query as { query?: string } | undefined)?.query;
    if (variable.type === 'query') for (const name of metricNames(query ?? '')) used.set(name, `variable ${variable.name}`);
  }
  assert.ok(used.size >= 12, `only ${used.size} metrics found in the dashboard`);
  for (const [name, where] of used) assert.ok(exported.has(name), `${where}: ${name} is not exported by the daemon`);
});

test('the check catches a metric the daemon does not export', async () => {
  const exported = await exportedNames();
  const missing = metricNames('sum(rate(lifeboat_backup_totl{cluster=~"$cluster"}[5m]))').filter((n) => !exported.has(n));
  assert.deepEqual(missing, ['lifeboat_backup_totl']);
  assert.ok(exported.has('lifeboat_backup_duration_seconds_bucket') && !exported.has('lifeboat_backup_duration_seconds'));
});

test('every metric in the alerting rules (expressions and annotation queries) is exported, or is Prometheus\'s own up', async () => {
  const exported = await exportedNames();
  const used = new Set<string>();
  for (const rule of rules) {
    for (const expr of [rule.expr, ...annotationQueries(rule.annotations)]) {
      for (const name of metricNames(expr)) {
        used.add(name);
        assert.ok(exported.has(name) || name === 'up', `${rule.alert}: ${name} is not exported by the daemon`);
      }
    }
  }
  assert.ok(used.has('process_start_time_seconds') && used.has('lifeboat_is_leader') && used.has('up'));
});

test('the dashboard: schema, data source and cluster variables, and the panels the issue asks for', () => {
  assert.equal(dashboard.uid, 'lifeboat');
  assert.ok(dashboard.schemaVersion >= 36 && dashboard.schemaVersion <= 41);
  const variables = new Map(dashboard.templating.list.map((v) => [v.name, v]));
  assert.equal(variables.get('datasource')?.type, 'datasource');
  assert.equal(variables.get('cluster')?.definition, 'label_values(lifeboat_build_info, cluster)');

  const ids = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  for (const panel of panels) {
    assert.ok(panel.gridPos && panel.gridPos.x + panel.gridPos.w <= 24, `${panel.title}: gridPos`);
    assert.equal(panel.datasource?.uid, '${datasource}', `${panel.title}: data source variable`);
    assert.ok((panel.targets ?? []).length > 0, `${panel.title}: no query`);
    for (const target of panel.targets ?? []) {
      // Every selector of a Lifeboat series is narrowed to the chosen clusters.
      const selectors = [...(target.expr ?? '').matchAll(/\b(lifeboat_[a-z_]+)(\{[^}]*\})?/g)];
      for (const [, name, matchers] of selectors) assert.match(matchers ?? '', /cluster=~"\$cluster"/, `${panel.title}: ${name} is not filtered by $cluster`);
    }
  }
  const titles = panels.map((p) => p.title);
  for (const wanted of ['Since the last successful backup', 'Since the last successful drill', 'Backup duration', 'Backup size', 'Backup failures by reason', 'Leader', 'Store errors', 'Change log lag (RPO)', 'Change log gaps', 'Change log replay speed']) {
    assert.ok(titles.includes(wanted), `no panel "${wanted}"`);
  }
});

test('prometheusrule.yaml is generated from lifeboat-rules.yaml and in sync with it', () => {
  const rulesText = readFileSync(RULES_FILE, 'utf8');
  const generated = readFileSync(PROMETHEUS_RULE_FILE, 'utf8');
  assert.equal(generated, prometheusRule(rulesText), 'out of date: run node scripts/gen-prometheusrule.ts');
  const manifest = parse(generated) as { apiVersion: string; kind: string; metadata: { name: string }; spec: { groups: unknown } };
  assert.equal(manifest.apiVersion, 'monitoring.coreos.com/v1');
  assert.equal(manifest.kind, 'PrometheusRule');
  assert.equal(manifest.metadata.name, 'lifeboat');
  assert.deepEqual(manifest.spec.groups, (parse(rulesText) as { groups: unknown }).groups);
  // The comparison is real: a changed rule makes the generated text differ.
  assert.notEqual(prometheusRule(rulesText.replace('for: 5m', 'for: 6m')), generated);
});
