'use strict';
// Renders /v1/openapi.json for people: operations by tag, their parameters, bodies,
// responses and examples, a curl line for each, and every shared response and schema.
// Plain DOM, no library: the page works offline and loads nothing but the document.

const methods = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

// add appends children to node: strings as text, arrays flattened, empties skipped.
function add(node, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false || child === '') continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value);
  }
  return add(node, children);
}

// md renders the Markdown the document uses: paragraphs, `code` and **bold**.
function md(text) {
  const out = document.createDocumentFragment();
  for (const para of String(text || '').split(/\n{2,}/)) {
    if (!para.trim()) continue;
    const p = el('p');
    for (const part of para.split(/(`[^`]+`|\*\*[^*]+\*\*)/)) {
      if (part.startsWith('`') && part.endsWith('`') && part.length > 1) p.append(el('code', {}, part.slice(1, -1)));
      else if (part.startsWith('**') && part.endsWith('**') && part.length > 3) p.append(el('strong', {}, part.slice(2, -2)));
      else if (part) p.append(part);
    }
    out.append(p);
  }
  return out;
}

function pretty(value) {
  return el('pre', {}, JSON.stringify(value, null, 2));
}

function render(doc) {
  const refName = ref => ref.split('/').pop();
  const resolve = obj => {
    let seen = 0;
    while (obj && obj.$ref && seen++ < 10) {
      obj = obj.$ref.replace(/^#\//, '').split('/').reduce((o, k) => o && o[decodeURIComponent(k)], doc);
    }
    return obj || {};
  };
  const schemaLink = ref => el('a', {href: '#schema-' + refName(ref)}, refName(ref));

  // typeOf describes a schema in a few words, linking named schemas.
  function typeOf(schema) {
    if (!schema) return 'any';
    if (schema.$ref) return schemaLink(schema.$ref);
    const parts = [];
    if (schema.allOf && schema.allOf.length === 1) parts.push(typeOf(schema.allOf[0]));
    else if (schema.type === 'array') parts.push('array of ', typeOf(schema.items));
    else if (schema.type) parts.push(schema.type + (schema.format ? ' (' + schema.format + ')' : ''));
    else parts.push('any');
    if (schema.nullable) parts.push(' or null');
    return el('span', {class: 'schema'}, parts);
  }

  function constraints(schema) {
    const s = resolve(schema);
    const list = [];
    if (s.enum) list.push('one of ' + s.enum.map(v => JSON.stringify(v)).join(', '));
    if (s.minimum !== undefined) list.push('at least ' + s.minimum);
    if (s.maximum !== undefined) list.push('at most ' + s.maximum);
    if (s.minLength !== undefined) list.push('at least ' + s.minLength + ' characters');
    if (s.minItems !== undefined) list.push('at least ' + s.minItems + ' items');
    if (s.pattern) list.push('matches ' + s.pattern);
    if (s.default !== undefined) list.push('default ' + JSON.stringify(s.default));
    return list.length ? el('div', {class: 'schema'}, list.join('; ')) : null;
  }

  function propertiesTable(schema) {
    const s = resolve(schema);
    if (!s.properties) return null;
    const required = new Set(s.required || []);
    const rows = Object.entries(s.properties).map(([name, prop]) => el('tr', {},
      el('td', {}, el('code', {}, name), required.has(name) ? el('span', {class: 'req'}, 'required') : null),
      el('td', {}, typeOf(prop)),
      el('td', {}, md(prop.description || resolve(prop).description || ''), constraints(prop))));
    const table = el('table', {}, el('tr', {}, el('th', {}, 'field'), el('th', {}, 'type'), el('th', {}, 'meaning')), rows);
    const note = s.additionalProperties === false ? el('div', {class: 'schema'}, 'No other fields.') : null;
    return el('div', {}, table, note);
  }

  function examplesOf(media) {
    if (!media) return [];
    if (media.example !== undefined) return [['example', media.example]];
    return Object.entries(media.examples || {}).map(([name, ex]) => [resolve(ex).summary || name, resolve(ex).value]);
  }

  function exampleBlocks(media) {
    return examplesOf(media).map(([name, value]) => el('details', {}, el('summary', {}, 'example: ' + name), pretty(value)));
  }

  function curl(method, path, params, body) {
    let target = location.origin + path;
    const query = [];
    for (const p of params) {
      const ex = p.example !== undefined ? p.example : Object.values(p.examples || {}).map(e => resolve(e).value)[0];
      if (p.in === 'path') target = target.replace('{' + p.name + '}', ex !== undefined ? ex : 'ID');
      else if (p.in === 'query' && ex !== undefined) query.push(p.name + '=' + encodeURIComponent(ex));
    }
    if (query.length) target += '?' + query.join('&');
    let line = 'curl -s';
    if (method !== 'get') line += ' -X ' + method.toUpperCase();
    line += " '" + target + "'";
    const media = body && body.content && body.content['application/json'];
    const ex = examplesOf(media)[0];
    if (ex) line += " -H 'Content-Type: application/json' -d '" + JSON.stringify(ex[1]) + "'";
    return el('pre', {}, line);
  }

  function operation(path, method, op, item) {
    const params = [...(item.parameters || []), ...(op.parameters || [])].map(resolve);
    const section = el('section', {class: 'op', id: op.operationId || method + path},
      el('h3', {}, el('span', {class: 'method ' + method}, method), ' ', el('span', {class: 'path'}, path),
        op.summary ? el('span', {class: 'summary'}, ' · ' + op.summary) : null),
      md(op.description));
    add(section, curl(method, path, params, resolve(op.requestBody)));
    if (params.length) {
      add(section, el('h4', {}, 'Parameters'), el('table', {},
        el('tr', {}, el('th', {}, 'name'), el('th', {}, 'in'), el('th', {}, 'type'), el('th', {}, 'meaning')),
        params.map(p => el('tr', {},
          el('td', {}, el('code', {}, p.name), p.required ? el('span', {class: 'req'}, 'required') : null),
          el('td', {}, p.in), el('td', {}, typeOf(p.schema)),
          el('td', {}, md(p.description), constraints(p.schema))))));
    }
    if (op.requestBody) {
      const body = resolve(op.requestBody);
      add(section, el('h4', {}, 'Request body' + (body.required ? '' : ' (optional)')), md(body.description));
      for (const [type, media] of Object.entries(body.content || {})) {
        add(section, el('div', {}, el('code', {}, type), ': ', typeOf(media.schema)), propertiesTable(media.schema), exampleBlocks(media));
      }
    }
    add(section, el('h4', {}, 'Responses'));
    const rows = Object.entries(op.responses || {}).map(([status, ref]) => {
      const response = resolve(ref);
      const content = Object.entries(response.content || {});
      return el('tr', {},
        el('td', {}, el('span', {class: 'status s' + status[0]}, status)),
        el('td', {}, content.length ? content.map(([type, media]) => el('div', {}, typeOf(media.schema), ' ', el('code', {}, type))) : 'no body'),
        el('td', {}, md(response.description), content.map(([, media]) => exampleBlocks(media))));
    });
    add(section, el('table', {}, el('tr', {}, el('th', {}, 'status'), el('th', {}, 'body'), el('th', {}, 'when')), rows));
    return section;
  }

  const main = document.getElementById('doc');
  main.replaceChildren();
  document.getElementById('title').textContent = doc.info.title + ' (version ' + doc.info.version + ')';
  add(main, md(doc.info.description));

  // Operations, by tag, with a table of contents.
  const byTag = new Map((doc.tags || []).map(t => [t.name, {tag: t, ops: []}]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of methods) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || 'other';
      if (!byTag.has(tag)) byTag.set(tag, {tag: {name: tag}, ops: []});
      byTag.get(tag).ops.push(operation(path, method, op, item));
    }
  }
  const toc = el('ul', {id: 'toc'});
  for (const {tag, ops} of byTag.values()) {
    if (!ops.length) continue;
    toc.append(el('li', {}, el('a', {href: '#tag-' + tag.name}, tag.name), ': ',
      ops.map((s, i) => [i ? ', ' : '', el('a', {href: '#' + s.id},
        s.querySelector('.method').textContent.toUpperCase() + ' ' + s.querySelector('.path').textContent)])));
  }
  add(main, el('h2', {}, 'Routes'), toc);
  for (const {tag, ops} of byTag.values()) {
    if (!ops.length) continue;
    add(main, el('h2', {id: 'tag-' + tag.name}, tag.name), tag.description ? md(tag.description) : '', ops);
  }

  const components = doc.components || {};
  add(main, el('h2', {id: 'responses'}, 'Shared responses'));
  for (const [name, response] of Object.entries(components.responses || {})) {
    const headers = Object.entries(response.headers || {}).map(([h, spec]) => el('div', {}, 'header ', el('code', {}, h), ': ', md(spec.description)));
    add(main, el('section', {class: 'op', id: 'response-' + name}, el('h3', {}, name), md(response.description), headers,
      Object.entries(response.content || {}).map(([type, media]) => [el('div', {}, typeOf(media.schema), ' ', el('code', {}, type)), exampleBlocks(media)])));
  }
  add(main, el('h2', {id: 'schemas'}, 'Schemas'));
  for (const [name, schema] of Object.entries(components.schemas || {})) {
    add(main, el('section', {class: 'op', id: 'schema-' + name}, el('h3', {}, name), md(schema.description),
      schema.properties ? propertiesTable(schema) : el('div', {}, typeOf(schema), constraints(schema)),
      schema.example !== undefined ? el('div', {}, 'example: ', el('code', {}, JSON.stringify(schema.example))) : null));
  }
  document.body.dataset.rendered = 'true';
}

(async () => {
  const status = document.getElementById('status');
  let doc;
  try {
    const res = await fetch('openapi.json', {headers: {Accept: 'application/json'}});
    if (!res.ok) throw new Error('HTTP ' + res.status);
    doc = await res.json();
  } catch (err) {
    status.textContent = 'Could not load openapi.json: ' + err.message;
    status.className = 'error';
    return;
  }
  render(doc);
  if (location.hash) document.getElementById(decodeURIComponent(location.hash.slice(1)))?.scrollIntoView();
})();
