//! Renders the Terraform Registry docs (`docs/index.md`, `docs/resources/*.md`,
//! `docs/data-sources/*.md`) from the provider's schemas and the examples under `examples/`.
//! The test `docs_match_the_schema` fails when the committed docs drift; regenerate with
//! `UPDATE_DOCS=1 cargo test -p terraform-provider-matrixhost docs_`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use tf_provider::schema::{Attribute, AttributeConstraint, AttributeType, Block, NestedBlock, Schema};

use crate::data_sources;
use crate::provider::provider_schema;
use crate::resources::backup_policy::BackupPolicyResource;
use crate::resources::billing_plan::BillingPlanResource;
use crate::resources::homeserver::HomeserverResource;
use crate::resources::managed::ApiResource;
use crate::resources::reserved_user::ReservedUserResource;
use crate::schema_builder::FieldDocs;

/// What a page documents.
pub struct Page {
    /// `matrixhost_homeserver`, or `matrixhost` for the provider.
    pub name: &'static str,
    pub kind: Kind,
    pub schema: Schema,
    /// Descriptions of the fields of object-typed attributes.
    pub field_docs: Vec<(&'static str, FieldDocs)>,
    /// Extra Markdown after the schema (before the import section).
    pub notes: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Provider,
    Resource,
    DataSource,
}

fn resource_page<R: ApiResource>(notes: &'static str) -> Page {
    Page { name: R::TYPE, kind: Kind::Resource, schema: R::schema(), field_docs: vec![], notes }
}

pub fn pages() -> Vec<Page> {
    let page = |name, kind, schema, field_docs, notes| Page { name, kind, schema, field_docs, notes };
    vec![
        page("matrixhost", Kind::Provider, provider_schema(), vec![], PROVIDER_NOTES),
        resource_page::<BillingPlanResource>(""),
        resource_page::<HomeserverResource>(HOMESERVER_NOTES),
        resource_page::<ReservedUserResource>(RESERVED_USER_NOTES),
        resource_page::<BackupPolicyResource>(""),
        page("matrixhost_regions", Kind::DataSource, data_sources::regions_schema(), vec![("regions", data_sources::REGION_FIELDS)], ""),
        page("matrixhost_plans", Kind::DataSource, data_sources::plans_schema(), vec![("plans", data_sources::PLAN_FIELDS)], ""),
        page(
            "matrixhost_homeserver",
            Kind::DataSource,
            data_sources::homeserver_schema(),
            vec![("volume", data_sources::VOLUME_FIELDS), ("data_controller", data_sources::CONTROLLER_FIELDS)],
            "",
        ),
        page("matrixhost_backups", Kind::DataSource, data_sources::backups_schema(), vec![("backups", data_sources::BACKUP_FIELDS)], ""),
    ]
}

const PROVIDER_NOTES: &str = r#"## Installing the provider

The provider is not on the public Terraform Registry. Build it and install it into a filesystem
mirror, then point Terraform at the mirror for the `terraform.local/matrixhost/*` source address:

```shell
cargo build --profile provider-release -p terraform-provider-matrixhost
VERSION=0.1.0
MIRROR="$PWD/.terraform-mirror"
mkdir -p "$MIRROR/terraform.local/matrixhost/matrixhost/$VERSION/linux_amd64"
cp target/provider-release/terraform-provider-matrixhost \
   "$MIRROR/terraform.local/matrixhost/matrixhost/$VERSION/linux_amd64/terraform-provider-matrixhost_v$VERSION"

cat > "$PWD/terraform.rc" <<EOF
provider_installation {
  filesystem_mirror {
    path    = "$MIRROR"
    include = ["terraform.local/*/*"]
  }
  direct {
    exclude = ["terraform.local/*/*"]
  }
}
EOF
export TF_CLI_CONFIG_FILE="$PWD/terraform.rc"
terraform init
```

After rebuilding the binary, run `terraform init -upgrade` (or delete `.terraform.lock.hcl`): the checksum recorded for the version changes.

## Authentication

The provider needs the API `endpoint` and an API `token` of your organization, from the provider
block or from `MATRIXHOST_ENDPOINT` and `MATRIXHOST_TOKEN`. Missing or invalid credentials fail
once, when the provider is configured. The token is never printed, logged, or stored in state.

## Retries

API calls that fail with HTTP 429 or 5xx, or get no answer, are retried with exponential backoff
(honouring `Retry-After`) up to `max_retries` times within about a minute; then the error names
the call that failed. Creates carry an idempotency key, so a retried create never creates twice.
"#;

const HOMESERVER_NOTES: &str = r#"## Timeouts

Create and update wait until the homeserver is `running` (Terraform prints "Still creating…" while
it waits). If it fails, the error carries the server's `status_reason`; if it is not running
within the timeout, the error says which status it is in. Destroy waits until the homeserver is
gone. A homeserver with `deletion_protection = true` cannot be destroyed: set it to `false` and
apply first.

## Drift and import

Every refresh reads every attribute back. A homeserver deleted outside Terraform is removed from
the state and planned again. Email addresses and domains are compared case-insensitively and
`allowed_email_domains` is a set, so the server's normalised spelling never shows as a change.
After an import the plan is empty, except that a `timeouts` block in the configuration (which
the server does not know) shows once as an in-place update that only records it in the state.
"#;

const RESERVED_USER_NOTES: &str = r#"## Invitations: no password in the state

A reserved user with a `localpart` and no `initial_password` is invited by email. The message
carries a one-time link, valid for 72 hours, where the person chooses the password of their
Matrix account. The password goes straight to the homeserver and passes through neither
Terraform, its state, nor the matrixhost API. An expired link offers to mail a new one to the
same address.

## Deprecated: `initial_password`

Terraform stores `initial_password` in its state in plain text, so using it gives a warning.
It is sent once, when the reserved user is created, and is never read back. An imported reserved
user has no `initial_password` in state: if the configuration sets one, the first plan after the
import shows it being recorded (an update that sends nothing to the API).
"#;

fn type_name(t: &AttributeType) -> String {
    match t {
        AttributeType::String => "String".into(),
        AttributeType::Number => "Number".into(),
        AttributeType::Bool => "Boolean".into(),
        AttributeType::List(inner) => format!("List of {}", type_name(inner)),
        AttributeType::Set(inner) => format!("Set of {}", type_name(inner)),
        AttributeType::Map(inner) => format!("Map of {}", type_name(inner)),
        AttributeType::Object(_) => "Object".into(),
        AttributeType::Tuple(_) => "Tuple".into(),
        AttributeType::Any => "Dynamic".into(),
        _ => "Nested attributes".into(),
    }
}

fn object_fields(t: &AttributeType) -> Option<&std::collections::HashMap<String, AttributeType>> {
    match t {
        AttributeType::Object(f) => Some(f),
        AttributeType::List(inner) | AttributeType::Set(inner) | AttributeType::Map(inner) => object_fields(inner),
        _ => None,
    }
}

fn anchor(prefix: &str, path: &str) -> String {
    format!("{prefix}--{}", path.replace('.', "--"))
}

struct Nested {
    anchor: String,
    title: String,
    body: String,
}

fn attr_line(name: &str, a: &Attribute, path: &str, page: &Page, nested: &mut Vec<Nested>) -> String {
    let mut kind = type_name(&a.attr_type);
    if a.sensitive {
        kind.push_str(", Sensitive");
    }
    let mut line = format!("- `{name}` ({kind}) {}", a.description.content.trim());
    if let Some(fields) = object_fields(&a.attr_type) {
        let full = if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") };
        let id = anchor("nestedatt", &full);
        line.push_str(&format!(" (see [below for nested schema](#{id}))"));
        let docs: BTreeMap<&str, &str> = page
            .field_docs
            .iter()
            .find(|(n, _)| *n == full || *n == name)
            .map(|(_, d)| d.iter().copied().collect())
            .unwrap_or_default();
        let mut body = String::from("Read-Only:\n\n");
        let mut names: Vec<&String> = fields.keys().collect();
        names.sort();
        for f in names {
            let desc = docs.get(f.as_str()).copied().unwrap_or("");
            let _ = writeln!(body, "- `{f}` ({}) {desc}", type_name(&fields[f]));
        }
        nested.push(Nested { anchor: id, title: full, body });
    }
    line
}

/// Renders the attribute and block lists of a block, grouped as the Registry does.
fn render_block(block: &Block, path: &str, page: &Page, top: bool, nested: &mut Vec<Nested>) -> String {
    let mut required = Vec::new();
    let mut optional = Vec::new();
    let mut read_only = Vec::new();
    let mut names: Vec<&String> = block.attributes.keys().collect();
    names.sort();
    for name in names {
        let a = &block.attributes[name];
        let line = attr_line(name, a, path, page, nested);
        match a.constraint {
            AttributeConstraint::Required => required.push((name.clone(), line)),
            AttributeConstraint::Optional | AttributeConstraint::OptionalComputed => optional.push((name.clone(), line)),
            AttributeConstraint::Computed => read_only.push((name.clone(), line)),
        }
    }
    let mut blocks: Vec<(&String, &NestedBlock)> = block.blocks.iter().collect();
    blocks.sort_by_key(|(n, _)| n.as_str());
    for (name, nb) in blocks {
        let full = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
        let id = anchor("nestedblock", &full);
        let (inner, label, is_required) = match nb {
            NestedBlock::Single(b) => (b, "Block, Required", true),
            NestedBlock::Optional(b) => (b, "Block List, Max: 1", false),
            NestedBlock::Group(b) => (b, "Block", false),
            NestedBlock::List(b) => (b, "Block List", false),
            NestedBlock::Set(b) => (b, "Block Set", false),
            NestedBlock::Map(b) => (b, "Block Map", false),
        };
        let line = format!(
            "- `{name}` ({label}) {} (see [below for nested schema](#{id}))",
            inner.description.content.trim()
        );
        if is_required {
            required.push((name.clone(), line));
        } else {
            optional.push((name.clone(), line));
        }
        let mut sub = Vec::new();
        let body = render_block(inner, &full, page, false, &mut sub);
        nested.push(Nested { anchor: id, title: full, body });
        nested.extend(sub);
    }
    for v in [&mut required, &mut optional, &mut read_only] {
        v.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let mut out = String::new();
    for (title, items) in [("Required", &required), ("Optional", &optional), ("Read-Only", &read_only)] {
        if items.is_empty() {
            continue;
        }
        if top {
            let _ = writeln!(out, "### {title}\n");
        } else {
            let _ = writeln!(out, "{title}:\n");
        }
        for (_, line) in items.iter() {
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
    }
    out
}

fn example_path(root: &Path, page: &Page, file: &str) -> PathBuf {
    match page.kind {
        Kind::Provider => root.join("examples/provider").join(file),
        Kind::Resource => root.join("examples/resources").join(page.name).join(file),
        Kind::DataSource => root.join("examples/data-sources").join(page.name).join(file),
    }
}

/// Where a page is written, relative to the workspace root.
pub fn doc_path(page: &Page) -> PathBuf {
    let short = page.name.strip_prefix("matrixhost_").unwrap_or(page.name);
    match page.kind {
        Kind::Provider => PathBuf::from("docs/index.md"),
        Kind::Resource => PathBuf::from(format!("docs/resources/{short}.md")),
        Kind::DataSource => PathBuf::from(format!("docs/data-sources/{short}.md")),
    }
}

/// The example files a page embeds.
pub fn example_files(page: &Page) -> Vec<&'static str> {
    match page.kind {
        Kind::Provider => vec!["provider.tf"],
        Kind::Resource => vec!["resource.tf", "import.sh"],
        Kind::DataSource => vec!["data-source.tf"],
    }
}

fn read_example(root: &Path, page: &Page, file: &str) -> Result<String, String> {
    let p = example_path(root, page, file);
    std::fs::read_to_string(&p).map(|s| s.trim_end().to_owned()).map_err(|e| format!("{}: {e}", p.display()))
}

/// Renders one page; `root` is the workspace root (for the examples).
pub fn render(root: &Path, page: &Page) -> Result<String, String> {
    let what = match page.kind {
        Kind::Provider => "Provider",
        Kind::Resource => "Resource",
        Kind::DataSource => "Data Source",
    };
    let description = page.schema.block.description.content.trim();
    let mut out = String::new();
    let title = if page.kind == Kind::Provider { "matrixhost Provider".to_owned() } else { format!("{} {what} - terraform-provider-matrixhost", page.name) };
    let _ = writeln!(out, "---");
    let _ = writeln!(out, "page_title: \"{title}\"");
    let _ = writeln!(out, "subcategory: \"\"");
    let _ = writeln!(out, "description: |-");
    let _ = writeln!(out, "  {description}");
    let _ = writeln!(out, "---\n");
    let _ = writeln!(out, "<!-- Generated from the provider schema by provider/src/docs.rs; do not edit by hand. -->\n");
    if page.kind == Kind::Provider {
        let _ = writeln!(out, "# matrixhost Provider\n");
    } else {
        let _ = writeln!(out, "# {} ({what})\n", page.name);
    }
    let _ = writeln!(out, "{description}\n");
    let main_example = example_files(page)[0];
    let _ = writeln!(out, "## Example Usage\n\n```terraform\n{}\n```\n", read_example(root, page, main_example)?);
    let mut nested = Vec::new();
    let body = render_block(&page.schema.block, "", page, true, &mut nested);
    let _ = writeln!(out, "## Schema\n");
    out.push_str(&body);
    for n in nested {
        let _ = writeln!(out, "<a id=\"{}\"></a>\n### Nested Schema for `{}`\n", n.anchor, n.title);
        out.push_str(&n.body);
        if !n.body.ends_with("\n\n") {
            out.push('\n');
        }
    }
    if !page.notes.is_empty() {
        out.push_str(page.notes.trim_end());
        out.push_str("\n\n");
    }
    if page.kind == Kind::Resource {
        let _ = writeln!(out, "## Import\n\nImport is supported using the following syntax:\n\n```shell\n{}\n```\n", read_example(root, page, "import.sh")?);
    }
    Ok(format!("{}\n", out.trim_end()))
}

/// Every page with its path relative to `root`.
pub fn render_all(root: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    pages().iter().map(|p| Ok((doc_path(p), render(root, p)?))).collect()
}

/// Every attribute and block without a description (there must be none).
pub fn undescribed() -> Vec<String> {
    fn walk(block: &Block, path: &str, out: &mut Vec<String>) {
        for (name, a) in &block.attributes {
            if a.description.content.trim().is_empty() {
                out.push(format!("{path}{name}"));
            }
        }
        for (name, nb) in &block.blocks {
            let inner = match nb {
                NestedBlock::Single(b)
                | NestedBlock::Optional(b)
                | NestedBlock::Group(b)
                | NestedBlock::List(b)
                | NestedBlock::Set(b)
                | NestedBlock::Map(b) => b,
            };
            if inner.description.content.trim().is_empty() || inner.description.content == "empty" {
                out.push(format!("{path}{name}"));
            }
            walk(inner, &format!("{path}{name}."), out);
        }
    }
    let mut out = Vec::new();
    for page in pages() {
        if page.schema.block.description.content.trim().is_empty() {
            out.push(page.name.to_owned());
        }
        walk(&page.schema.block, &format!("{}.", page.name), &mut out);
        for (attr, docs) in &page.field_docs {
            for (field, desc) in docs.iter() {
                if desc.trim().is_empty() {
                    out.push(format!("{}.{attr}.{field}", page.name));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
    }

    #[test]
    fn docs_every_attribute_is_described() {
        assert_eq!(undescribed(), Vec::<String>::new());
    }

    #[test]
    fn docs_match_the_schema() {
        let root = root();
        let pages = render_all(&root).unwrap_or_else(|e| panic!("rendering the docs: {e}"));
        let update = std::env::var_os("UPDATE_DOCS").is_some();
        let mut drifted = Vec::new();
        for (rel, text) in pages {
            let path = root.join(&rel);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current != text {
                if update {
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, &text).unwrap();
                } else {
                    drifted.push(rel.display().to_string());
                }
            }
        }
        assert!(
            drifted.is_empty(),
            "docs drifted from the schema: {drifted:?}; regenerate with `UPDATE_DOCS=1 cargo test -p terraform-provider-matrixhost docs_`"
        );
    }

    #[test]
    fn docs_every_page_has_its_examples() {
        let root = root();
        for page in pages() {
            for file in example_files(&page) {
                let p = example_path(&root, &page, file);
                assert!(p.exists(), "{} is missing", p.display());
            }
        }
    }
}
