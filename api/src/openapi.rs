//! The OpenAPI 3 document, generated from the API types and the endpoint table below.
//! `api/openapi.json` is this document, committed; a test fails when they drift apart.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::*;

/// What an endpoint takes and returns, with schemas generated from the Rust types.
struct Endpoint {
    method: &'static str,
    path: &'static str,
    operation_id: &'static str,
    summary: &'static str,
    /// Request body schema (only for POST/PUT).
    body: Option<Value>,
    /// Success status and schema (None: no body).
    ok: (u16, Option<Value>),
    /// Another success response, when there are two.
    also_ok: Option<(u16, &'static str, Option<Value>)>,
    /// Whether the endpoint is a paginated list.
    list: bool,
    /// Whether `Idempotency-Key` applies (creates).
    idempotent: bool,
    /// Whether `If-Match` applies (updates and deletes).
    if_match: bool,
    /// Extra query parameters: (name, description).
    query: &'static [(&'static str, &'static str)],
    /// Whether the endpoint needs a bearer token.
    auth: bool,
}

struct Builder {
    generator: SchemaGenerator,
    endpoints: Vec<Endpoint>,
}

impl Builder {
    fn schema<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    fn add(&mut self, e: Endpoint) {
        self.endpoints.push(e);
    }
}

fn endpoint(method: &'static str, path: &'static str, operation_id: &'static str, summary: &'static str) -> Endpoint {
    Endpoint {
        method,
        path,
        operation_id,
        summary,
        body: None,
        ok: (200, None),
        also_ok: None,
        list: false,
        idempotent: false,
        if_match: false,
        query: &[],
        auth: true,
    }
}

impl Endpoint {
    fn returns(mut self, status: u16, schema: Value) -> Self {
        self.ok = (status, Some(schema));
        self
    }
    fn no_content(mut self) -> Self {
        self.ok = (204, None);
        self
    }
    fn body(mut self, schema: Value) -> Self {
        self.body = Some(schema);
        self
    }
    fn list(mut self) -> Self {
        self.list = true;
        self
    }
    fn create(mut self) -> Self {
        self.idempotent = true;
        self
    }
    fn if_match(mut self) -> Self {
        self.if_match = true;
        self
    }
    fn query(mut self, q: &'static [(&'static str, &'static str)]) -> Self {
        self.query = q;
        self
    }
    fn public(mut self) -> Self {
        self.auth = false;
        self
    }
}

/// Declares the CRUD endpoints of one resource kind.
struct Crud {
    collection: &'static str,
    item: &'static str,
    noun: &'static str,
    create_op: &'static str,
    list_op: &'static str,
    get_op: &'static str,
    update_op: &'static str,
    delete_op: &'static str,
}

fn crud(b: &mut Builder, c: Crud, resource: Value, page: Value, create: Value, update: Value, list_query: &'static [(&'static str, &'static str)]) {
    b.add(endpoint("get", c.collection, c.list_op, leak(format!("List {}s", c.noun))).returns(200, page).list().query(list_query));
    b.add(endpoint("post", c.collection, c.create_op, leak(format!("Create a {}", c.noun))).body(create).returns(201, resource.clone()).create());
    b.add(endpoint("get", c.item, c.get_op, leak(format!("Read a {}", c.noun))).returns(200, resource.clone()));
    let resource_for_202 = resource.clone();
    b.add(endpoint("put", c.item, c.update_op, leak(format!("Update a {}", c.noun))).body(update).returns(200, resource).if_match());
    b.add(endpoint("delete", c.item, c.delete_op, leak(format!("Delete a {}", c.noun))).no_content().if_match());
    if c.noun == "homeserver" {
        // With the runtime, deletion is long work: 202 and status `deleting`, then 404.
        let last = b.endpoints.last_mut().expect("just added");
        last.also_ok = Some((202, "Accepted: status `deleting` until the runtime has torn it down; then reads answer 404", Some(resource_for_202)));
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The whole OpenAPI document.
pub fn document() -> Value {
    let mut b = Builder { generator: SchemaSettings::openapi3().into_generator(), endpoints: Vec::new() };

    let health = b.schema::<Health>();
    b.add(endpoint("get", "/healthz", "health", "Liveness and version").returns(200, health).public());
    b.add(endpoint("get", "/openapi.json", "openapi", "This document").returns(200, json!({"type": "object"})).public());
    let org = b.schema::<Organization>();
    b.add(endpoint("get", "/v1/organization", "get_organization", "The organization that owns the calling token").returns(200, org));

    let (region, regions) = (b.schema::<Region>(), b.schema::<Page<Region>>());
    b.add(endpoint("get", "/v1/regions", "list_regions", "List regions (R1)").returns(200, regions).list());
    b.add(endpoint("get", "/v1/regions/{code}", "get_region", "Read a region").returns(200, region));
    let (plan, plans) = (b.schema::<Plan>(), b.schema::<Page<Plan>>());
    b.add(endpoint("get", "/v1/plans", "list_plans", "List plan tiers (R5)").returns(200, plans).list());
    b.add(endpoint("get", "/v1/plans/{tier}", "get_plan", "Read a plan tier").returns(200, plan));

    let (r, p, c, u) = (b.schema::<BillingPlan>(), b.schema::<Page<BillingPlan>>(), b.schema::<BillingPlanCreate>(), b.schema::<BillingPlanUpdate>());
    crud(&mut b, Crud {
        collection: "/v1/billing-plans", item: "/v1/billing-plans/{billing_plan_id}", noun: "billing plan",
        create_op: "create_billing_plan", list_op: "list_billing_plans", get_op: "get_billing_plan",
        update_op: "update_billing_plan", delete_op: "delete_billing_plan",
    }, r, p, c, u, &[]);

    let (r, p, c, u) = (b.schema::<Homeserver>(), b.schema::<Page<Homeserver>>(), b.schema::<HomeserverCreate>(), b.schema::<HomeserverUpdate>());
    crud(&mut b, Crud {
        collection: "/v1/homeservers", item: "/v1/homeservers/{homeserver_id}", noun: "homeserver",
        create_op: "create_homeserver", list_op: "list_homeservers", get_op: "get_homeserver",
        update_op: "update_homeserver", delete_op: "delete_homeserver",
    }, r, p, c, u, &[("name", "Only the homeserver with this name")]);

    let usage = b.schema::<HomeserverUsage>();
    b.add(endpoint("get", "/v1/homeservers/{homeserver_id}/usage", "get_homeserver_usage", "Server-level usage: MAU, registered users, volume bytes (R23)").returns(200, usage));
    let events = b.schema::<Page<HomeserverEvent>>();
    b.add(
        endpoint(
            "get",
            "/v1/homeservers/{homeserver_id}/events",
            "list_homeserver_events",
            "What happened to the homeserver, oldest first: out of memory, crashes, storage full (R12, R24)",
        )
        .returns(200, events)
        .list(),
    );

    let (r, p, c, u) = (b.schema::<ReservedUser>(), b.schema::<Page<ReservedUser>>(), b.schema::<ReservedUserCreate>(), b.schema::<ReservedUserUpdate>());
    crud(&mut b, Crud {
        collection: "/v1/homeservers/{homeserver_id}/reserved-users",
        item: "/v1/homeservers/{homeserver_id}/reserved-users/{reserved_user_id}", noun: "reserved user",
        create_op: "create_reserved_user", list_op: "list_reserved_users", get_op: "get_reserved_user",
        update_op: "update_reserved_user", delete_op: "delete_reserved_user",
    }, r, p, c, u, &[("email", "Only the reserved user with this email (case-insensitive)")]);

    let (policy, spec) = (b.schema::<BackupPolicy>(), b.schema::<BackupPolicySpec>());
    let path = "/v1/homeservers/{homeserver_id}/backup-policy";
    b.add(endpoint("post", path, "create_backup_policy", "Create the homeserver's backup policy (R4)").body(spec.clone()).returns(201, policy.clone()).create());
    b.add(endpoint("get", path, "get_backup_policy", "Read the homeserver's backup policy").returns(200, policy.clone()));
    b.add(endpoint("put", path, "update_backup_policy", "Update the homeserver's backup policy").body(spec).returns(200, policy).if_match());
    b.add(endpoint("delete", path, "delete_backup_policy", "Delete the homeserver's backup policy").no_content().if_match());
    let (backup, backups, erasure) = (b.schema::<Backup>(), b.schema::<Page<Backup>>(), b.schema::<BackupErasure>());
    let path = "/v1/homeservers/{homeserver_id}/backups";
    b.add(endpoint("get", path, "list_backups", "List the homeserver's backups (R4); also of a deleted homeserver until they expire").returns(200, backups).list());
    b.add(endpoint("post", path, "create_backup", "Take an on-demand backup now (R4); 202, poll the backup until `completed`").returns(202, backup.clone()).create());
    b.add(endpoint("delete", path, "erase_backups", "Erase every backup of the homeserver, also after it was deleted (R18); needs `erase=true`")
        .returns(200, erasure)
        .query(&[("erase", "Must be `true`: erasing cannot be undone")]));
    let item = "/v1/homeservers/{homeserver_id}/backups/{backup_id}";
    b.add(endpoint("get", item, "get_backup", "Read a backup").returns(200, backup));
    b.add(endpoint("delete", item, "delete_backup", "Delete a backup (not while it is written or restored)").no_content());
    let (restore, restores, restore_create) = (b.schema::<Restore>(), b.schema::<Page<Restore>>(), b.schema::<RestoreCreate>());
    let path = "/v1/homeservers/{homeserver_id}/restores";
    b.add(endpoint("get", path, "list_restores", "List the homeserver's restores").returns(200, restores).list());
    b.add(endpoint("post", path, "create_restore", "Restore a completed backup into the homeserver (R4); 202, poll the restore. The homeserver is offline (`updating`) while the data is swapped in")
        .body(restore_create)
        .returns(202, restore.clone())
        .create());
    b.add(endpoint("get", "/v1/homeservers/{homeserver_id}/restores/{restore_id}", "get_restore", "Read a restore and its status").returns(200, restore));

    let error = b.schema::<ApiError>();
    let Builder { mut generator, endpoints } = b;
    let schemas = generator.take_definitions(true);
    render(endpoints, schemas, error)
}

fn render(endpoints: Vec<Endpoint>, schemas: Map<String, Value>, error: Value) -> Value {
    let mut paths = Map::new();
    for e in endpoints {
        let entry = paths.entry(e.path).or_insert_with(|| json!({}));
        entry[e.method] = operation(&e, &error);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "matrixhost hosting API",
            "version": crate::API_VERSION,
            "description": "Managed Matrix homeserver hosting. Errors share one shape (ApiError). Lists paginate with `limit` and `page_token`. Writes take `If-Match` with the resource version; creates take `Idempotency-Key`. Long work is a `status` that clients poll."
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "API token from `matrixhostd token create`."}},
        }
    })
}

fn operation(e: &Endpoint, error: &Value) -> Value {
    let mut params: Vec<Value> = path_params(e.path)
        .into_iter()
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    if e.list {
        params.push(json!({"name": "limit", "in": "query", "required": false, "description": "Page size, 1-100 (default 50)", "schema": {"type": "integer", "minimum": 1, "maximum": crate::MAX_PAGE_SIZE}}));
        params.push(json!({"name": "page_token", "in": "query", "required": false, "description": "`next_page_token` of the previous page", "schema": {"type": "string"}}));
    }
    for (name, description) in e.query {
        params.push(json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}}));
    }
    if e.idempotent {
        params.push(json!({"name": "Idempotency-Key", "in": "header", "required": false, "description": "A retried create with the same key returns the first result and creates nothing new.", "schema": {"type": "string", "maxLength": 200}}));
    }
    if e.if_match {
        params.push(json!({"name": "If-Match", "in": "header", "required": false, "description": "The resource `version` (or ETag) the change is based on; a stale one gets 409.", "schema": {"type": "string"}}));
    }
    let mut responses = Map::new();
    let ok = match &e.ok.1 {
        Some(schema) => json!({"description": "Success", "content": {"application/json": {"schema": schema}}}),
        None => json!({"description": "Success, no content"}),
    };
    responses.insert(e.ok.0.to_string(), ok);
    if let Some((status, description, schema)) = &e.also_ok {
        let mut response = json!({"description": description});
        if let Some(schema) = schema {
            response["content"] = json!({"application/json": {"schema": schema}});
        }
        responses.insert(status.to_string(), response);
    }
    for (status, why) in error_statuses(e) {
        responses.insert(status.to_string(), json!({"description": why, "content": {"application/json": {"schema": error}}}));
    }
    let mut op = json!({"operationId": e.operation_id, "summary": e.summary, "parameters": params, "responses": responses});
    if let Some(body) = &e.body {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": body}}});
    }
    if !e.auth {
        op["security"] = json!([]);
    }
    op
}

fn error_statuses(e: &Endpoint) -> Vec<(u16, &'static str)> {
    let mut out = vec![(500, "Internal error")];
    if !e.auth {
        return out;
    }
    out.extend([(401, "Missing, unknown or revoked token"), (429, "Too many requests; retry after `Retry-After` seconds")]);
    if e.path.contains('{') {
        out.push((404, "Not found (also for another organization's resources)"));
    }
    if e.body.is_some() {
        out.extend([(400, "Malformed JSON or unknown field"), (422, "A field breaks a rule; `field` names it")]);
    }
    if e.method != "get" {
        out.push((409, "Conflict: stale If-Match, a duplicate, or a resource still in use"));
    }
    if e.operation_id == "create_billing_plan" {
        out.push((403, "R15: the organization's email is not verified"));
    }
    if e.operation_id == "get_homeserver_usage" {
        out.extend([
            (409, "`not_running`: this control plane runs no homeservers"),
            (503, "`homeserver_unavailable`: the homeserver could not be measured right now; retry later"),
        ]);
    }
    if e.operation_id == "erase_backups" {
        out.push((422, "`erase=true` is missing"));
    }
    out.sort();
    out
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}')).collect()
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("the document serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_openapi_matches_the_types() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let generated = super::document_text();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "api/openapi.json is out of date with the API types; regenerate it with `UPDATE_OPENAPI=1 cargo test -p matrixhost-api`"
        );
    }

    #[test]
    fn every_operation_has_an_error_response_and_refs_resolve() {
        let doc = super::document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in ["ApiError", "Homeserver", "HomeserverEvent", "BillingPlan", "ReservedUser", "BackupPolicy", "Backup", "Restore", "BackupErasure", "Region", "Plan"] {
            assert!(schemas.contains_key(name), "missing schema {name}");
        }
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
        for (_, item) in doc["paths"].as_object().unwrap() {
            for (_, op) in item.as_object().unwrap() {
                assert!(op["responses"]["500"].is_object());
            }
        }
    }
}
