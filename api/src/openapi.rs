//! The OpenAPI 3 document, generated from the API types and the endpoint table below.
//! `api/openapi.json` is this document, committed; a test fails when they drift apart.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use crate::operations::Op;
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
    /// Extra query parameters.
    query: &'static [Query],
    /// Whether the endpoint needs a bearer token.
    auth: bool,
    /// A required request header: name and description.
    header: Option<(&'static str, &'static str)>,
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

fn endpoint(op: Op, summary: &'static str) -> Endpoint {
    Endpoint {
        method: op.method().as_str(),
        path: op.path(),
        operation_id: op.id(),
        summary,
        body: None,
        ok: (200, None),
        also_ok: None,
        list: false,
        idempotent: false,
        if_match: false,
        query: &[],
        auth: true,
        header: None,
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
    fn query(mut self, q: &'static [Query]) -> Self {
        self.query = q;
        self
    }
    fn public(mut self) -> Self {
        self.auth = false;
        self
    }
    fn header(mut self, name: &'static str, description: &'static str) -> Self {
        self.header = Some((name, description));
        self
    }
}

/// A query parameter: its schema is JSON text, so the table below stays `const`.
struct Query {
    name: &'static str,
    description: &'static str,
    required: bool,
    schema: &'static str,
}

/// Declares the CRUD endpoints of one resource kind.
struct Crud {
    noun: &'static str,
    list: Op,
    create: Op,
    get: Op,
    update: Op,
    delete: Op,
}

fn crud(b: &mut Builder, c: Crud, resource: Value, page: Value, create: Value, update: Value, list_query: &'static [Query]) {
    b.add(endpoint(c.list, leak(format!("List {}s", c.noun))).returns(200, page).list().query(list_query));
    b.add(endpoint(c.create, leak(format!("Create a {}", c.noun))).body(create).returns(201, resource.clone()).create());
    b.add(endpoint(c.get, leak(format!("Read a {}", c.noun))).returns(200, resource.clone()));
    let resource_for_202 = resource.clone();
    b.add(endpoint(c.update, leak(format!("Update a {}", c.noun))).body(update).returns(200, resource).if_match());
    b.add(endpoint(c.delete, leak(format!("Delete a {}", c.noun))).no_content().if_match());
    if c.delete == Op::DeleteHomeserver {
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
    b.add(endpoint(Op::Health, "Liveness and version").returns(200, health).public());
    b.add(endpoint(Op::OpenApi, "This document").returns(200, json!({"type": "object"})).public());
    let org = b.schema::<Organization>();
    b.add(endpoint(Op::GetOrganization, "The organization that owns the calling token").returns(200, org));

    let (region, regions) = (b.schema::<Region>(), b.schema::<Page<Region>>());
    b.add(endpoint(Op::ListRegions, "List regions (R1)").returns(200, regions).list());
    b.add(endpoint(Op::GetRegion, "Read a region").returns(200, region));
    let (plan, plans) = (b.schema::<Plan>(), b.schema::<Page<Plan>>());
    b.add(endpoint(Op::ListPlans, "List plan tiers (R5)").returns(200, plans).list());
    b.add(endpoint(Op::GetPlan, "Read a plan tier").returns(200, plan));

    let (r, p, c, u) = (b.schema::<BillingPlan>(), b.schema::<Page<BillingPlan>>(), b.schema::<BillingPlanCreate>(), b.schema::<BillingPlanUpdate>());
    crud(&mut b, Crud {
        noun: "billing plan", list: Op::ListBillingPlans, create: Op::CreateBillingPlan, get: Op::GetBillingPlan,
        update: Op::UpdateBillingPlan, delete: Op::DeleteBillingPlan,
    }, r, p, c, u, &[]);

    let (r, p, c, u) = (b.schema::<Homeserver>(), b.schema::<Page<Homeserver>>(), b.schema::<HomeserverCreate>(), b.schema::<HomeserverUpdate>());
    crud(&mut b, Crud {
        noun: "homeserver", list: Op::ListHomeservers, create: Op::CreateHomeserver, get: Op::GetHomeserver,
        update: Op::UpdateHomeserver, delete: Op::DeleteHomeserver,
    }, r, p, c, u, &[Query { name: "name", description: "Only the homeserver with this name", required: false, schema: r#"{"type": "string"}"# }]);

    let usage = b.schema::<HomeserverUsage>();
    b.add(endpoint(Op::GetHomeserverUsage, "Server-level usage: MAU, registered users, volume bytes (R23)").returns(200, usage));
    let events = b.schema::<Page<HomeserverEvent>>();
    b.add(
        endpoint(Op::ListHomeserverEvents,
            "What happened to the homeserver, oldest first: out of memory, crashes, storage full (R12, R24)",
        )
        .returns(200, events)
        .list(),
    );

    let (r, p, c, u) = (b.schema::<ReservedUser>(), b.schema::<Page<ReservedUser>>(), b.schema::<ReservedUserCreate>(), b.schema::<ReservedUserUpdate>());
    crud(&mut b, Crud {
        noun: "reserved user", list: Op::ListReservedUsers, create: Op::CreateReservedUser, get: Op::GetReservedUser,
        update: Op::UpdateReservedUser, delete: Op::DeleteReservedUser,
    }, r, p, c, u, &[Query {
        name: "email",
        description: "Only the reserved user with this email (case-insensitive)",
        required: false,
        schema: r##"{"$ref": "#/components/schemas/Email"}"##,
    }]);

    let (policy, spec) = (b.schema::<BackupPolicy>(), b.schema::<BackupPolicySpec>());
    b.add(endpoint(Op::CreateBackupPolicy, "Create the homeserver's backup policy (R4)").body(spec.clone()).returns(201, policy.clone()).create());
    b.add(endpoint(Op::GetBackupPolicy, "Read the homeserver's backup policy").returns(200, policy.clone()));
    b.add(endpoint(Op::UpdateBackupPolicy, "Update the homeserver's backup policy").body(spec).returns(200, policy).if_match());
    b.add(endpoint(Op::DeleteBackupPolicy, "Delete the homeserver's backup policy").no_content().if_match());
    let (backup, backups, erasure) = (b.schema::<Backup>(), b.schema::<Page<Backup>>(), b.schema::<BackupErasure>());
    b.add(endpoint(Op::ListBackups, "List the homeserver's backups (R4); also of a deleted homeserver until they expire").returns(200, backups).list());
    b.add(endpoint(Op::CreateBackup, "Take an on-demand backup now (R4); 202, poll the backup until `completed`").returns(202, backup.clone()).create());
    b.add(endpoint(Op::EraseBackups, "Erase every backup of the homeserver, also after it was deleted (R18); needs `erase=true`")
        .returns(200, erasure)
        .query(&[Query { name: "erase", description: "Must be `true`: erasing cannot be undone", required: true, schema: r#"{"type": "boolean", "enum": [true]}"# }]));
    b.add(endpoint(Op::GetBackup, "Read a backup").returns(200, backup));
    b.add(endpoint(Op::DeleteBackup, "Delete a backup (not while it is written or restored)").no_content());
    let (restore, restores, restore_create) = (b.schema::<Restore>(), b.schema::<Page<Restore>>(), b.schema::<RestoreCreate>());
    b.add(endpoint(Op::ListRestores, "List the homeserver's restores").returns(200, restores).list());
    b.add(endpoint(Op::CreateRestore, "Restore a completed backup into the homeserver (R4); 202, poll the restore. The homeserver is offline (`updating`) while the data is swapped in")
        .body(restore_create)
        .returns(202, restore.clone())
        .create());
    b.add(endpoint(Op::GetRestore, "Read a restore and its status").returns(200, restore));

    let receipt = b.schema::<StripeEventReceipt>();
    b.add(
        endpoint(Op::ReceiveStripeEvent, "Stripe's webhook: a signed event (R12: `invoice.payment_failed` blocks the billing plan's homeserver, `invoice.paid` lifts the block); each event id is handled once")
            .body(json!({"type": "object", "description": "A Stripe event, as Stripe sends it"}))
            .returns(200, receipt)
            .header("Stripe-Signature", "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">` under the endpoint's signing secret; at most 5 minutes old")
            .public(),
    );

    let error = b.schema::<ApiError>();
    let Builder { mut generator, endpoints } = b;
    let mut schemas = generator.take_definitions(true);
    for settings in ["HomeserverCreate", "HomeserverSettings"] {
        if let Some(schema) = schemas.get_mut(settings) {
            schema["oneOf"] = registration_policy_schema();
        }
    }
    render(endpoints, schemas, error)
}

/// R9 across two fields (`RegistrationPolicy::new`): domains with `email_domains` (at least
/// one), and none with the other modes, `invite_only` being the default.
fn registration_policy_schema() -> Value {
    json!([
        {
            "required": ["registration", "allowed_email_domains"],
            "properties": {"registration": {"enum": ["email_domains"]}, "allowed_email_domains": {"minItems": 1}}
        },
        {
            "properties": {"registration": {"enum": ["invite_only", "open"]}, "allowed_email_domains": {"maxItems": 0}}
        }
    ])
}

fn render(endpoints: Vec<Endpoint>, schemas: Map<String, Value>, error: Value) -> Value {
    let mut paths = Map::new();
    for e in &endpoints {
        let entry = paths.entry(e.path).or_insert_with(|| json!({}));
        let mut op = operation(e, &error);
        let links = links_from(e, &endpoints);
        if !links.is_empty() {
            op["responses"][e.ok.0.to_string()]["links"] = Value::Object(links);
        }
        entry[e.method] = op;
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
        params.push(json!({"name": "page_token", "in": "query", "required": false, "description": "`next_page_token` of the previous page", "schema": {"type": "string", "pattern": request::PAGE_TOKEN_PATTERN}}));
    }
    for q in e.query {
        let schema: Value = serde_json::from_str(q.schema).expect("a query schema is JSON");
        params.push(json!({"name": q.name, "in": "query", "required": q.required, "description": q.description, "schema": schema}));
    }
    if e.idempotent {
        params.push(json!({"name": "Idempotency-Key", "in": "header", "required": false, "description": "A retried create with the same key returns the first result and creates nothing new.", "schema": {"type": "string", "pattern": request::IDEMPOTENCY_KEY_PATTERN}}));
    }
    if let Some((name, description)) = e.header {
        params.push(json!({"name": name, "in": "header", "required": true, "description": description, "schema": {"type": "string"}}));
    }
    if e.if_match {
        params.push(json!({"name": "If-Match", "in": "header", "required": false, "description": "The resource `version` (or ETag) the change is based on; a stale one gets 409.", "schema": {"type": "string", "pattern": request::IF_MATCH_PATTERN}}));
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

/// OpenAPI links from a create to what it makes possible: every operation on the new object and
/// below it, with the new id from the response and the others from the create's own path.
fn links_from(create: &Endpoint, all: &[Endpoint]) -> Map<String, Value> {
    let mut links = Map::new();
    if create.method != "post" || !matches!(create.ok.0, 201 | 202) {
        return links;
    }
    let prefix = format!("{}/{{", create.path);
    let Some(new_param) = all.iter().find_map(|e| e.path.strip_prefix(prefix.as_str()).and_then(|rest| rest.split('}').next())) else {
        return links;
    };
    let known = path_params(create.path);
    for target in all.iter().filter(|e| e.path.starts_with(prefix.as_str())) {
        let mut parameters = Map::new();
        for param in path_params(target.path) {
            let value = if param == new_param {
                "$response.body#/id".to_owned()
            } else if known.contains(&param) {
                format!("$request.path.{param}")
            } else {
                parameters.clear();
                break;
            };
            parameters.insert(param.to_owned(), json!(value));
        }
        if !parameters.is_empty() {
            links.insert(target.operation_id.to_owned(), json!({"operationId": target.operation_id, "parameters": parameters}));
        }
    }
    // Creates whose body names what this create made.
    for (source, target, field) in BODY_LINKS {
        let Some(target) = all.iter().find(|e| e.operation_id == *target).filter(|_| create.operation_id == *source) else { continue };
        let mut link = json!({"operationId": target.operation_id, "requestBody": {*field: "$response.body#/id"}});
        let parameters: Map<String, Value> = path_params(target.path)
            .into_iter()
            .filter(|p| known.contains(p))
            .map(|p| (p.to_owned(), json!(format!("$request.path.{p}"))))
            .collect();
        if !parameters.is_empty() {
            link["parameters"] = Value::Object(parameters);
        }
        links.insert(format!("{}_with_new_{field}", target.operation_id), link);
    }
    links
}

/// (create, create whose body refers to what the first made, the body field).
const BODY_LINKS: &[(&str, &str, &str)] = &[("create_billing_plan", "create_homeserver", "billing_plan_id"), ("create_backup", "create_restore", "backup_id")];

fn error_statuses(e: &Endpoint) -> Vec<(u16, &'static str)> {
    let mut out = vec![(500, "Internal error")];
    if e.operation_id == "receive_stripe_event" {
        out.extend([
            (401, "`invalid_signature`: the Stripe-Signature header is missing, does not match, or is more than 5 minutes old"),
            (400, "`invalid_body`: signed, but the body is not a Stripe event"),
            (404, "This server takes no Stripe webhooks (no signing secret configured); a request without Stripe-Signature is a 401 all the same"),
        ]);
    }
    if !e.auth {
        return out;
    }
    out.extend([(401, "Missing, unknown or revoked token"), (429, "Too many requests; retry after `Retry-After` seconds")]);
    if e.path.contains('{') {
        out.push((404, "Not found (also for another organization's resources)"));
    }
    if e.body.is_some() {
        out.extend([(400, "Malformed JSON, an unknown field, or a malformed header"), (422, "A field breaks a rule; `field` names it")]);
    } else if e.idempotent || e.if_match {
        out.push((400, "A malformed `Idempotency-Key` or `If-Match` header"));
    }
    if e.list {
        out.push((422, "`limit` or `page_token` is not one the API gives"));
    }
    if e.query.iter().any(|q| q.required) || e.query.iter().any(|q| q.name == "email") {
        out.push((422, "A query parameter breaks a rule; `field` names it"));
    }
    if e.method != "get" {
        out.push((409, "Conflict: stale If-Match, a duplicate, or a resource still in use"));
    }
    if e.operation_id == "create_homeserver" {
        out.push((404, "`billing_plan_id` names no billing plan of this organization; `field` says so"));
    }
    if e.operation_id == "create_billing_plan" {
        out.push((403, "R15: the organization's email is not verified"));
    }
    if matches!(e.operation_id, "create_billing_plan" | "update_billing_plan") {
        out.extend([
            (402, "`payment_required`: no card on file to pay in advance with (R11); `payment_failed`: the card was refused. Nothing was changed; `field` names the input"),
            (502, "`payment_processor_unavailable`: the payment processor could not be reached; nothing was changed"),
        ]);
    }
    if e.operation_id == "delete_billing_plan" {
        out.push((502, "`payment_processor_unavailable`: the subscription could not be ended at the payment processor; the plan stays"));
    }
    if e.operation_id == "get_homeserver_usage" {
        out.extend([
            (409, "`not_running`: this control plane runs no homeservers"),
            (503, "`homeserver_unavailable`: the homeserver could not be measured right now; retry later"),
        ]);
    }
    out.sort();
    out.dedup_by_key(|(status, _)| *status);
    out
}

fn path_params(path: &str) -> Vec<&str> {
    path.split('/').filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}')).collect()
}

/// The document as a server serves it: plan tiers and region codes are its catalog's, so a
/// request that fits the schema names only tiers and US regions that exist (R1, R5).
pub fn document_for(catalog: &Catalog) -> Value {
    let mut doc = document();
    let schemas = &mut doc["components"]["schemas"];
    let tiers: Vec<&str> = catalog.plans.iter().map(|p| p.tier.as_str()).collect();
    schemas["PlanTier"]["enum"] = json!(tiers);
    let regions: Vec<&str> = catalog.regions.iter().filter(|r| r.country == "US").map(|r| r.code.as_str()).collect();
    schemas["RegionCode"]["enum"] = json!(regions);
    doc
}

/// The document as committed: pretty JSON with a trailing newline.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("the document serialises");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use crate::operations::Op;

    /// The document describes the operation table, each operation once, and nothing else.
    #[test]
    fn the_document_is_the_operation_table() {
        let doc = super::document();
        let mut documented = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                documented.push((method.clone(), path.clone(), op["operationId"].as_str().unwrap().to_owned()));
            }
        }
        let mut table: Vec<_> = Op::ALL.iter().map(|op| (op.method().as_str().to_owned(), op.path().to_owned(), op.id().to_owned())).collect();
        documented.sort();
        table.sort();
        assert_eq!(documented, table);
    }

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
