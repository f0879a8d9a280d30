//! A small builder for `tf_provider` schemas. Every attribute and block takes a description:
//! the docs under `docs/` are rendered from them (see [`crate::docs`]).

use std::collections::HashMap;

use tf_provider::schema::{Attribute, AttributeConstraint, AttributeType, Block, Description, NestedBlock, Schema};

pub use tf_provider::schema::AttributeType as T;

/// The schema version of every resource. `tf-provider` cannot upgrade state between versions
/// (its `Resource::upgrade` cannot be overridden usefully here), so it stays 0 and schema
/// changes must stay compatible.
pub const SCHEMA_VERSION: i64 = 0;

pub struct BlockBuilder {
    block: Block,
    last: Option<String>,
}

impl BlockBuilder {
    pub fn new(description: &str) -> Self {
        Self {
            block: Block { version: SCHEMA_VERSION, description: Description::markdown(description), ..Default::default() },
            last: None,
        }
    }

    fn add(mut self, name: &str, attr_type: AttributeType, constraint: AttributeConstraint, description: &str) -> Self {
        self.block.attributes.insert(
            name.to_owned(),
            Attribute {
                attr_type,
                description: Description::markdown(description),
                constraint,
                sensitive: false,
                deprecated: false,
            },
        );
        self.last = Some(name.to_owned());
        self
    }

    pub fn required(self, name: &str, t: AttributeType, description: &str) -> Self {
        self.add(name, t, AttributeConstraint::Required, description)
    }

    pub fn optional(self, name: &str, t: AttributeType, description: &str) -> Self {
        self.add(name, t, AttributeConstraint::Optional, description)
    }

    /// Optional; when left out the provider plans a default (or keeps a computed value).
    pub fn optional_computed(self, name: &str, t: AttributeType, description: &str) -> Self {
        self.add(name, t, AttributeConstraint::OptionalComputed, description)
    }

    pub fn computed(self, name: &str, t: AttributeType, description: &str) -> Self {
        self.add(name, t, AttributeConstraint::Computed, description)
    }

    /// Marks the attribute added last as sensitive.
    pub fn sensitive(mut self) -> Self {
        if let Some(name) = &self.last {
            if let Some(a) = self.block.attributes.get_mut(name) {
                a.sensitive = true;
            }
        }
        self
    }

    pub fn block(mut self, name: &str, nested: NestedBlock) -> Self {
        self.block.blocks.insert(name.to_owned(), nested);
        self
    }

    pub fn build(self) -> Block {
        self.block
    }

    pub fn schema(self) -> Schema {
        Schema { version: SCHEMA_VERSION, block: self.build() }
    }
}

pub fn set_of_strings() -> AttributeType {
    T::Set(Box::new(T::String))
}

pub fn object(fields: &[(&str, AttributeType)]) -> AttributeType {
    T::Object(fields.iter().map(|(n, t)| ((*n).to_owned(), t.clone())).collect::<HashMap<_, _>>())
}

pub fn list_of(t: AttributeType) -> AttributeType {
    T::List(Box::new(t))
}

/// Descriptions of the fields of an object-typed attribute, for the docs (object types carry
/// no descriptions of their own in the protocol).
pub type FieldDocs = &'static [(&'static str, &'static str)];

/// The `timeouts` block shared by resources that wait for long work.
pub fn timeouts_block(ops: &[(&str, &str)]) -> NestedBlock {
    let mut b = BlockBuilder::new(
        "How long to wait for long-running work. Each value is a duration such as `\"30s\"`, `\"10m\"` or `\"1h30m\"`.",
    );
    for (op, desc) in ops {
        b = b.optional(op, T::String, desc);
    }
    NestedBlock::Optional(b.build())
}
