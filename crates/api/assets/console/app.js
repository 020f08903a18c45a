// userexport console. Plain JavaScript, no dependencies, no build step.
//
// Talks to this server only: Descope's POST /v2/mgmt/user/search for the users table and the
// native /v1/exports routes for export tasks, with `Authorization: Bearer <project>:<key>`.
// The credentials live in sessionStorage (this tab only), never in a URL or persistent storage.
'use strict';

(function () {
  const STORAGE_KEY = 'userexport.console.credentials';
  const POLL_MS = 1000;
  const MAX_SELECTION = 1000; // the most user ids an export filter accepts
  const ACTIVE = new Set(['pending', 'processing']);

  const $ = (id) => document.getElementById(id);

  const state = {
    creds: null,
    page: 0,
    limit: 20,
    total: 0,
    users: [],
    query: {}, // the filters of the last search: {text, statuses, roleNames, tenantIds}
    selected: new Map(), // user id -> display label, kept across pages of one search
    scopeTouched: false,
    tasks: [],
    taskStatus: new Map(), // task id -> last seen status, to announce changes
    pollTimer: null,
    searchSeq: 0,
  };

  // ---------------------------------------------------------------------------------------------
  // Credentials

  function loadCreds() {
    try {
      const raw = sessionStorage.getItem(STORAGE_KEY);
      const c = raw ? JSON.parse(raw) : null;
      return c && typeof c.project === 'string' && typeof c.key === 'string' ? c : null;
    } catch (_) {
      return null;
    }
  }

  function saveCreds(c) {
    try {
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify(c));
    } catch (_) {
      // Storage may be disabled: the session then lasts until the page is reloaded.
    }
  }

  function clearCreds() {
    try {
      sessionStorage.removeItem(STORAGE_KEY);
    } catch (_) {
      // nothing stored
    }
  }

  // ---------------------------------------------------------------------------------------------
  // API

  class ApiError extends Error {
    constructor(status, message, code) {
      super(message);
      this.status = status;
      this.code = code || '';
    }
  }

  // The message of any dialect's error envelope (Descope, native, Authgear, Auth0).
  function errorMessage(body, res) {
    if (body && typeof body === 'object') {
      if (typeof body.errorMessage === 'string' && body.errorMessage) return body.errorMessage;
      if (typeof body.errorDescription === 'string' && body.errorDescription) return body.errorDescription;
      if (typeof body.message === 'string' && body.message) return body.message;
      if (body.error && typeof body.error.message === 'string') return body.error.message;
      if (typeof body.error_description === 'string') return body.error_description;
    }
    return 'HTTP ' + res.status + (res.statusText ? ' ' + res.statusText : '');
  }

  function errorCode(body) {
    if (!body || typeof body !== 'object') return '';
    return body.errorCode || body.code || (body.error && body.error.reason) || '';
  }

  async function api(method, path, body) {
    if (!state.creds) throw new ApiError(401, 'Not signed in.');
    const headers = {
      Accept: 'application/json',
      Authorization: 'Bearer ' + state.creds.project + ':' + state.creds.key,
    };
    const init = { method: method, headers: headers, credentials: 'omit', cache: 'no-store', referrerPolicy: 'no-referrer' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      // Relative to the page (/console), so a path prefix in front of the server works.
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'The server cannot be reached (' + (e && e.message ? e.message : 'network error') + ').');
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!res.ok) throw new ApiError(res.status, errorMessage(data, res), errorCode(data));
    return data;
  }

  // ---------------------------------------------------------------------------------------------
  // Messages

  function showError(context, err) {
    let text = context + ': ' + (err && err.message ? err.message : String(err));
    if (err && err.code) text += ' (' + err.code + ')';
    if (err && err.status) text += ' [HTTP ' + err.status + ']';
    $('error-text').textContent = text;
    $('error').hidden = false;
  }

  function clearError() {
    $('error').hidden = true;
    $('error-text').textContent = '';
  }

  // A 401 during use means the key was revoked or the project deleted: back to the sign-in form.
  function handleFailure(context, err) {
    if (err && err.status === 401 && state.creds) {
      signOut();
    }
    showError(context, err);
  }

  // ---------------------------------------------------------------------------------------------
  // Helpers

  function splitList(value) {
    return value
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s.length > 0);
  }

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') node.className = v;
        else if (k === 'text') node.textContent = v;
        else node.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (const child of children || []) {
      if (child === null || child === undefined) continue;
      node.append(child);
    }
    return node;
  }

  function formatSeconds(seconds) {
    if (typeof seconds !== 'number' || !isFinite(seconds) || seconds <= 0) return '';
    return new Date(seconds * 1000).toISOString().slice(0, 16).replace('T', ' ');
  }

  function formatTime(rfc3339) {
    if (!rfc3339) return '';
    const d = new Date(rfc3339);
    return isNaN(d.getTime()) ? rfc3339 : d.toISOString().slice(0, 19).replace('T', ' ') + ' UTC';
  }

  function plural(n, word) {
    return n + ' ' + word + (n === 1 ? '' : 's');
  }

  // ---------------------------------------------------------------------------------------------
  // Sign in / out

  function showApp() {
    $('signin').hidden = true;
    $('app').hidden = false;
    $('session').hidden = false;
    $('session-project').textContent = state.creds.project;
  }

  function signOut() {
    clearCreds();
    state.creds = null;
    state.users = [];
    state.total = 0;
    state.selected.clear();
    state.tasks = [];
    state.taskStatus.clear();
    stopPolling();
    $('users-body').replaceChildren();
    $('tasks').replaceChildren();
    $('app').hidden = true;
    $('session').hidden = true;
    $('signin').hidden = false;
    $('management-key').value = '';
    $('project-id').focus();
  }

  async function onSignIn(event) {
    event.preventDefault();
    clearError();
    const project = $('project-id').value.trim();
    const key = $('management-key').value.trim();
    if (!project || !key) {
      showError('Sign-in failed', new Error('Enter the project id and a management key.'));
      (project ? $('management-key') : $('project-id')).focus();
      return;
    }
    const button = $('signin-submit');
    button.disabled = true;
    state.creds = { project: project, key: key };
    try {
      // Checks the credentials and fills the table in one call.
      state.query = readFilters();
      await search(0);
    } catch (err) {
      state.creds = null;
      showError('Sign-in failed', err);
      $('management-key').focus();
      return;
    } finally {
      button.disabled = false;
    }
    saveCreds(state.creds);
    $('management-key').value = '';
    showApp();
    $('main').focus();
    loadTasks();
  }

  // ---------------------------------------------------------------------------------------------
  // Users

  function readFilters() {
    const q = {};
    const text = $('search-text').value.trim();
    if (text) q.text = text;
    const status = $('filter-status').value;
    if (status) q.statuses = [status];
    const roles = splitList($('filter-roles').value);
    if (roles.length) q.roleNames = roles;
    const tenants = splitList($('filter-tenants').value);
    if (tenants.length) q.tenantIds = tenants;
    return q;
  }

  async function search(page) {
    const seq = ++state.searchSeq;
    state.limit = Number($('page-size').value) || 20;
    const body = Object.assign({ limit: state.limit, page: page, withTestUser: false }, state.query);
    $('users-table').setAttribute('aria-busy', 'true');
    try {
      const data = await api('POST', 'v2/mgmt/user/search', body);
      if (seq !== state.searchSeq) return; // a newer search answered first
      state.page = page;
      state.users = Array.isArray(data && data.users) ? data.users : [];
      state.total = typeof data.total === 'number' ? data.total : state.users.length;
      renderUsers();
    } finally {
      if (seq === state.searchSeq) $('users-table').removeAttribute('aria-busy');
    }
  }

  async function runSearch(page, context) {
    clearError();
    try {
      await search(page);
    } catch (err) {
      handleFailure(context, err);
    }
  }

  function onSearch(event) {
    event.preventDefault();
    state.query = readFilters();
    state.selected.clear();
    state.scopeTouched = false;
    runSearch(0, 'Search failed');
  }

  function onResetFilters() {
    $('search-text').value = '';
    $('filter-status').value = '';
    $('filter-roles').value = '';
    $('filter-tenants').value = '';
    state.query = {};
    state.selected.clear();
    state.scopeTouched = false;
    runSearch(0, 'Search failed');
  }

  function userLabel(u) {
    return u.name || u.email || u.phone || (Array.isArray(u.loginIds) && u.loginIds[0]) || u.userId;
  }

  function renderUsers() {
    const tbody = $('users-body');
    const rows = state.users.map((u) => {
      const id = String(u.userId);
      const checked = state.selected.has(id);
      const box = el('input', {
        type: 'checkbox',
        class: 'row-select',
        'data-user-id': id,
        'aria-label': 'Select ' + userLabel(u),
      });
      box.checked = checked;
      const tenants = Array.isArray(u.userTenants)
        ? u.userTenants.map((t) => t.tenantName || t.tenantId).join(', ')
        : '';
      const roles = Array.isArray(u.roleNames) ? u.roleNames.join(', ') : '';
      const status = String(u.status || '');
      return el('tr', { class: checked ? 'selected' : '', 'data-user-id': id }, [
        el('td', { class: 'check' }, [box]),
        el('td', { text: u.name || '' }),
        el('td', { class: 'email', text: [u.email, u.phone].filter(Boolean).join(' · ') }),
        el('td', { class: 'id', text: id }),
        el('td', {}, [el('span', { class: 'badge ' + status, text: status })]),
        el('td', { text: roles }),
        el('td', { text: tenants }),
        el('td', { class: 'nowrap', text: formatSeconds(u.createdTime) }),
      ]);
    });
    if (rows.length === 0) {
      rows.push(el('tr', {}, [el('td', { class: 'empty', colspan: 8, text: 'No users match this search.' })]));
    }
    tbody.replaceChildren(...rows);
    $('users-table').setAttribute('data-total', String(state.total));
    $('users-table').setAttribute('data-page', String(state.page));

    const first = state.total === 0 ? 0 : state.page * state.limit + 1;
    const last = state.page * state.limit + state.users.length;
    const pages = Math.max(1, Math.ceil(state.total / state.limit));
    $('users-status').textContent =
      state.total === 0 ? 'No users match.' : 'Showing users ' + first + '–' + last + ' of ' + state.total + '.';
    $('page-info').textContent = 'Page ' + (state.page + 1) + ' of ' + pages;
    $('prev-page').disabled = state.page === 0;
    $('next-page').disabled = (state.page + 1) * state.limit >= state.total;
    $('matching-count').textContent = String(state.total);
    renderSelection();
  }

  function renderSelection() {
    const n = state.selected.size;
    $('selected-count').textContent = String(n);
    $('scope-selected').disabled = n === 0;
    $('clear-selection').disabled = n === 0;
    if (n === 0) {
      $('scope-all').checked = true;
    } else if (!state.scopeTouched) {
      $('scope-selected').checked = true;
    }
    const boxes = Array.from(document.querySelectorAll('#users-body input.row-select'));
    const on = boxes.filter((b) => b.checked).length;
    const all = $('select-page');
    all.checked = boxes.length > 0 && on === boxes.length;
    all.indeterminate = on > 0 && on < boxes.length;
    all.disabled = boxes.length === 0;
  }

  function setSelected(box, on) {
    const id = box.getAttribute('data-user-id');
    if (on) {
      if (!state.selected.has(id) && state.selected.size >= MAX_SELECTION) {
        box.checked = false;
        showError('Selection', new Error('At most ' + MAX_SELECTION + ' users can be selected; export the whole search instead.'));
        return false;
      }
      const user = state.users.find((u) => String(u.userId) === id);
      state.selected.set(id, user ? userLabel(user) : id);
    } else {
      state.selected.delete(id);
    }
    box.checked = on;
    const row = box.closest('tr');
    if (row) row.classList.toggle('selected', on);
    return true;
  }

  function onRowToggle(event) {
    const box = event.target;
    if (!(box instanceof HTMLInputElement) || !box.classList.contains('row-select')) return;
    setSelected(box, box.checked);
    renderSelection();
  }

  function onSelectPage() {
    const on = $('select-page').checked;
    for (const box of document.querySelectorAll('#users-body input.row-select')) {
      if (!setSelected(box, on)) break;
    }
    renderSelection();
    $('users-status').textContent = plural(state.selected.size, 'user') + ' selected.';
  }

  function onClearSelection() {
    state.selected.clear();
    state.scopeTouched = false;
    for (const box of document.querySelectorAll('#users-body input.row-select')) setSelected(box, false);
    renderSelection();
    $('users-status').textContent = 'Selection cleared.';
  }

  // ---------------------------------------------------------------------------------------------
  // Fields

  function renderFields() {
    let fields = [];
    try {
      fields = JSON.parse($('default-fields').textContent || '[]');
    } catch (_) {
      fields = [];
    }
    const list = $('field-list');
    list.replaceChildren(
      ...fields.map((f, i) => {
        const id = 'field-' + i;
        const box = el('input', {
          type: 'checkbox',
          id: id,
          class: 'field-select',
          'data-pointer': f.pointer,
          'data-name': f.name || '',
        });
        box.checked = true;
        return el('div', { class: 'choice' }, [box, el('label', { for: id, text: f.pointer })]);
      })
    );
  }

  function selectedFields() {
    return Array.from(document.querySelectorAll('#field-list input.field-select'))
      .filter((b) => b.checked)
      .map((b) => {
        const name = b.getAttribute('data-name');
        return name ? { pointer: b.getAttribute('data-pointer'), name: name } : { pointer: b.getAttribute('data-pointer') };
      });
  }

  function setAllFields(on) {
    for (const box of document.querySelectorAll('#field-list input.field-select')) box.checked = on;
  }

  // ---------------------------------------------------------------------------------------------
  // Exports

  function nativeFilters(q) {
    const f = {};
    if (q.text) f.text = q.text;
    if (q.statuses && q.statuses.length) f.statuses = q.statuses.slice();
    if (q.roleNames && q.roleNames.length) f.role_names = q.roleNames.slice();
    if (q.tenantIds && q.tenantIds.length) f.tenant_ids = q.tenantIds.slice();
    return f;
  }

  async function createExport(format) {
    clearError();
    const fields = selectedFields();
    if (fields.length === 0) {
      showError('Export not started', new Error('Pick at least one field.'));
      $('field-list').querySelector('input') && $('field-list').querySelector('input').focus();
      return;
    }
    const scope = $('scope-selected').checked ? 'selected' : 'all';
    let filters;
    if (scope === 'selected') {
      if (state.selected.size === 0) {
        showError('Export not started', new Error('Select at least one user, or export all matching users.'));
        return;
      }
      filters = { user_ids: Array.from(state.selected.keys()) };
    } else {
      filters = nativeFilters(state.query);
    }
    const buttons = [$('export-csv'), $('export-ndjson')];
    buttons.forEach((b) => (b.disabled = true));
    try {
      const task = await api('POST', 'v1/exports', { format: format, view: 'descope', fields: fields, filters: filters });
      state.tasks = [task].concat(state.tasks.filter((t) => t.id !== task.id));
      state.taskStatus.set(task.id, task.status);
      renderTasks();
      $('tasks-status').textContent =
        format.toUpperCase() + ' export of ' + describeScope(task) + ' started (' + task.id + ').';
      schedulePoll(true);
    } catch (err) {
      handleFailure('Export not started', err);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  function describeScope(task) {
    const f = task.filters || {};
    if (Array.isArray(f.user_ids) && f.user_ids.length) return plural(f.user_ids.length, 'selected user');
    const parts = [];
    if (f.text) parts.push('“' + f.text + '”');
    if (Array.isArray(f.statuses) && f.statuses.length) parts.push('status ' + f.statuses.join('/'));
    if (Array.isArray(f.role_names) && f.role_names.length) parts.push('roles ' + f.role_names.join(', '));
    if (Array.isArray(f.tenant_ids) && f.tenant_ids.length) parts.push('tenants ' + f.tenant_ids.join(', '));
    return parts.length ? 'users matching ' + parts.join(', ') : 'all users';
  }

  async function loadTasks() {
    try {
      const page = await api('GET', 'v1/exports?limit=20');
      const tasks = Array.isArray(page && page.results) ? page.results : [];
      for (const t of tasks) {
        const before = state.taskStatus.get(t.id);
        if (before && before !== t.status) announceTask(t);
        state.taskStatus.set(t.id, t.status);
      }
      state.tasks = tasks;
      renderTasks();
      schedulePoll(false);
    } catch (err) {
      stopPolling();
      handleFailure('Loading export tasks failed', err);
    }
  }

  function announceTask(t) {
    let text = 'Export ' + t.id + ' is ' + t.status + '.';
    if (t.status === 'completed') text = 'Export ' + t.id + ' completed: ' + plural(t.rows_written || 0, 'row') + ', ready to download.';
    if (t.status === 'failed' && t.error) text += ' ' + (t.error.message || '');
    $('tasks-status').textContent = text;
  }

  function stopPolling() {
    if (state.pollTimer !== null) {
      clearTimeout(state.pollTimer);
      state.pollTimer = null;
    }
  }

  function schedulePoll(force) {
    stopPolling();
    if (!state.creds) return;
    if (force || state.tasks.some((t) => ACTIVE.has(t.status))) {
      state.pollTimer = setTimeout(() => {
        state.pollTimer = null;
        loadTasks();
      }, POLL_MS);
    }
  }

  async function cancelTask(id, button) {
    clearError();
    button.disabled = true;
    try {
      const task = await api('POST', 'v1/exports/' + encodeURIComponent(id) + '/cancel');
      state.tasks = state.tasks.map((t) => (t.id === id ? task : t));
      $('tasks-status').textContent = 'Cancel requested for export ' + id + '.';
      renderTasks();
      schedulePoll(true);
    } catch (err) {
      button.disabled = false;
      handleFailure('Cancel failed', err);
    }
  }

  // Builds or updates the item of one task in place, so polling does not move keyboard focus.
  function taskItem(existing, t) {
    const li = existing || el('li', { class: 'task' }, [
      el('div', { class: 'task-head' }, [el('span', { class: 'task-title' }), el('span', { class: 'badge' })]),
      el('div', { class: 'task-meta' }),
      el('div', { class: 'task-progress' }, [el('progress', { max: 100 }), el('span', { class: 'task-rows' })]),
      el('p', { class: 'task-error', hidden: true }),
      el('div', { class: 'task-actions' }),
    ]);
    li.setAttribute('data-task-id', t.id);
    li.setAttribute('data-status', t.status);
    const format = String(t.format || '').toUpperCase();
    li.querySelector('.task-title').textContent = format + ' · ' + describeScope(t);
    const badge = li.querySelector('.badge');
    badge.className = 'badge ' + t.status;
    badge.textContent = t.status + (t.cancel_requested && ACTIVE.has(t.status) ? ' (cancelling)' : '');
    li.querySelector('.task-meta').textContent = t.id + ' · created ' + formatTime(t.created_at);

    const pct = typeof t.percentage_done === 'number' ? t.percentage_done : 0;
    const progress = li.querySelector('progress');
    progress.value = pct;
    progress.textContent = pct + '%';
    progress.setAttribute('aria-label', 'Progress of export ' + t.id);
    const written = typeof t.rows_written === 'number' ? t.rows_written : 0;
    li.querySelector('.task-rows').textContent =
      (typeof t.rows_total === 'number' ? written + ' of ' + plural(t.rows_total, 'row') : plural(written, 'row')) +
      ' · ' + pct + '%';

    const error = li.querySelector('.task-error');
    if (t.error && (t.status === 'failed' || t.status === 'cancelled')) {
      error.textContent = (t.error.message || 'Failed') + (t.error.code ? ' (' + t.error.code + ')' : '');
      error.hidden = false;
    } else {
      error.hidden = true;
      error.textContent = '';
    }

    // Actions: replaced only when they change, to keep focus on a still-present button.
    const actions = li.querySelector('.task-actions');
    const wanted =
      t.status === 'completed' && t.download_url ? 'download:' + t.download_url : ACTIVE.has(t.status) && !t.cancel_requested ? 'cancel' : '';
    if (actions.getAttribute('data-state') !== wanted) {
      actions.setAttribute('data-state', wanted);
      const children = [];
      if (wanted.startsWith('download:')) {
        const ext = String(t.format || 'csv') + (t.gzip ? '.gz' : '');
        children.push(
          el('a', {
            class: 'button small download',
            href: t.download_url,
            download: 'users-' + t.id + '.' + ext,
            rel: 'noopener noreferrer',
            text: 'Download ' + format,
            'aria-label': 'Download ' + format + ' of export ' + t.id,
          })
        );
      } else if (wanted === 'cancel') {
        const button = el('button', {
          type: 'button',
          class: 'danger small cancel',
          text: 'Cancel',
          'aria-label': 'Cancel export ' + t.id,
        });
        button.addEventListener('click', () => cancelTask(t.id, button));
        children.push(button);
      }
      actions.replaceChildren(...children);
    }
    return li;
  }

  function renderTasks() {
    const list = $('tasks');
    const existing = new Map();
    for (const li of Array.from(list.querySelectorAll('li.task'))) existing.set(li.getAttribute('data-task-id'), li);
    const empty = list.querySelector('li.tasks-empty');
    if (empty) empty.remove();
    state.tasks.forEach((t, i) => {
      const li = taskItem(existing.get(t.id), t);
      existing.delete(t.id);
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    });
    for (const stale of existing.values()) stale.remove();
    if (state.tasks.length === 0) list.append(el('li', { class: 'tasks-empty', text: 'No exports yet.' }));
  }

  // ---------------------------------------------------------------------------------------------
  // Wiring

  function init() {
    renderFields();
    $('signin-form').addEventListener('submit', onSignIn);
    $('sign-out').addEventListener('click', () => {
      clearError();
      signOut();
    });
    $('error-dismiss').addEventListener('click', clearError);
    $('search-form').addEventListener('submit', onSearch);
    $('search-reset').addEventListener('click', onResetFilters);
    $('page-size').addEventListener('change', () => runSearch(0, 'Search failed'));
    $('prev-page').addEventListener('click', () => runSearch(Math.max(0, state.page - 1), 'Loading the page failed'));
    $('next-page').addEventListener('click', () => runSearch(state.page + 1, 'Loading the page failed'));
    $('users-body').addEventListener('change', onRowToggle);
    $('select-page').addEventListener('change', onSelectPage);
    $('clear-selection').addEventListener('click', onClearSelection);
    for (const id of ['scope-selected', 'scope-all']) {
      $(id).addEventListener('change', () => {
        state.scopeTouched = true;
      });
    }
    $('fields-all').addEventListener('click', () => setAllFields(true));
    $('fields-none').addEventListener('click', () => setAllFields(false));
    $('export-csv').addEventListener('click', () => createExport('csv'));
    $('export-ndjson').addEventListener('click', () => createExport('ndjson'));
    $('refresh-tasks').addEventListener('click', () => {
      clearError();
      loadTasks();
    });
    renderSelection();

    const creds = loadCreds();
    if (creds) {
      state.creds = creds;
      showApp();
      runSearch(0, 'Search failed');
      loadTasks();
    } else {
      $('project-id').focus();
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
