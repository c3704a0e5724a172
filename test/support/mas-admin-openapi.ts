// Exchanges with the MAS admin API held against MAS's own OpenAPI 3.1 description
// (test/fixtures/mas-admin-api.json, as MAS publishes it): the request's path
// and method must be an operation of the description, its query parameters declared there and
// valid, its JSON body valid against the requestBody schema; the answer's status must be one the
// operation declares, and its body valid against that response's schema. Schemas are compiled by ajv
// (draft 2020-12, which OpenAPI 3.1 uses) straight from the description: nothing is restated here.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import _Ajv2020 from 'ajv/dist/2020.js';
import _addFormats from 'ajv-formats';
import { REPO } from './cli.js';
import type { Exchange } from './mas-admin-double.js';

const Ajv2020 = _Ajv2020.default;
const addFormats = _addFormats.default;

export const MAS_ADMIN_API = JSON.parse(readFileSync(join(REPO, 'test', 'fixtures', 'mas-admin-api.json'), 'utf8'));
const ID = 'mas-admin-api.json';

const ajv = new Ajv2020({ allErrors: true, strict: false });
addFormats(ajv);
// Rust's integer formats (schemars) and `ip`, which JSON Schema does not define.
for (const f of ['uint', 'uint8', 'uint16', 'uint32', 'uint64', 'int32', 'int64']) ajv.addFormat(f, { type: 'number', validate: (n: number) => Number.isInteger(n) && (f.startsWith('int') || n >= 0) });
ajv.addFormat('ip', (s: string) => ajv.validate({ anyOf: [{ format: 'ipv4' }, { format: 'ipv6' }] }, s) as boolean);
ajv.addSchema(MAS_ADMIN_API, ID);

const pointer = (...parts: string[]) => `${ID}#/` + parts.map((p) => p.replace(/~/g, '~0').replace(/\//g, '~1')).join('/');

interface Operation {
  template: string;
  method: string;
  op: any;
}

/** The description's operation for a request path, e.g. `/api/admin/v1/users/by-username/alice` → `/api/admin/v1/users/by-username/{username}`. */
export function operationOf(method: string, path: string): Operation | null {
  const candidates = Object.keys(MAS_ADMIN_API.paths).filter((t) => new RegExp(`^${t.replace(/\{[^}]+\}/g, '[^/]+')}$`).test(path));
  // A literal segment beats a parameter (`users/by-username/x` is not `users/{id}/…`).
  candidates.sort((a, b) => (a.match(/\{/g)?.length ?? 0) - (b.match(/\{/g)?.length ?? 0));
  for (const template of candidates) {
    const op = MAS_ADMIN_API.paths[template][method.toLowerCase()];
    if (op) return { template, method: method.toLowerCase(), op };
  }
  return null;
}

function errorsOf(validate: ReturnType<typeof ajv.getSchema>, value: unknown, where: string): string[] {
  if (!validate) return [`${where}: no schema`];
  return validate(value) ? [] : (validate.errors ?? []).map((e) => `${where}: ${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`);
}

function typeOf(schema: any): unknown {
  if (schema?.$ref) return typeOf(MAS_ADMIN_API.components.schemas[schema.$ref.split('/').pop()]);
  return schema?.type;
}

/** What is wrong with the request side of an exchange (empty when it follows the description). */
export function requestProblems(x: Pick<Exchange, 'method' | 'path' | 'query' | 'body'>): string[] {
  const found = operationOf(x.method, x.path);
  if (!found) return [`${x.method} ${x.path}: no such operation in the description`];
  const { template, method, op } = found;
  const problems: string[] = [];
  const params: any[] = op.parameters ?? [];
  for (const [name, value] of x.query) {
    const i = params.findIndex((p) => p.in === 'query' && p.name === name);
    if (i < 0) {
      problems.push(`${x.method} ${template}: query parameter ${name} is not in the description`);
      continue;
    }
    // Query values are text: one the schema says is a number or boolean is read as one first.
    const type = typeOf(params[i].schema);
    const typed = type === 'integer' || type === 'number' ? Number(value) : type === 'boolean' ? (value === 'true' ? true : value === 'false' ? false : value) : value;
    problems.push(...errorsOf(ajv.getSchema(pointer('paths', template, method, 'parameters', String(i), 'schema')), typed, `${x.method} ${template} ${name}=${value}`));
  }
  const bodySchema = op.requestBody?.content?.['application/json']?.schema;
  if (bodySchema) problems.push(...errorsOf(ajv.getSchema(pointer('paths', template, method, 'requestBody', 'content', 'application/json', 'schema')), x.body, `${x.method} ${template} body`));
  else if (x.body !== undefined) problems.push(`${x.method} ${template}: a body, where the description has none`);
  return problems;
}

/** What is wrong with the answer of an exchange (empty when it follows the description). */
export function responseProblems(x: Exchange): string[] {
  const found = operationOf(x.method, x.path);
  if (!found) return [`${x.method} ${x.path}: no such operation in the description`];
  const { template, method, op } = found;
  const status = String(x.status);
  // 401 (authentication) is the security scheme's answer, common to every operation: MAS's ErrorResponse.
  if (!op.responses[status]) {
    if (x.status === 401) return errorsOf(ajv.getSchema(pointer('components', 'schemas', 'ErrorResponse')), x.answer, `${x.method} ${template} 401`);
    return [`${x.method} ${template}: status ${status} is not among the described ${Object.keys(op.responses).join('/')}`];
  }
  if (!op.responses[status].content) return x.answer === undefined || x.answer === null ? [] : [`${x.method} ${template} ${status}: a body, where the description has none`];
  return errorsOf(ajv.getSchema(pointer('paths', template, method, 'responses', status, 'content', 'application/json', 'schema')), x.answer, `${x.method} ${template} ${status}`);
}

/** Both sides of every exchange. */
export function exchangeProblems(exchanges: Exchange[]): string[] {
  return exchanges.flatMap((x) => [...requestProblems(x), ...responseProblems(x)]);
}
