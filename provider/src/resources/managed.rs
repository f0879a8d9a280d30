//! The scaffolding every managed resource shares, written once: plan, create, read (and with
//! it drift), update, delete, import, the optimistic-concurrency version, the waits and the
//! error diagnostics. A resource is an [`ApiResource`]: its paths, its mapping between the
//! Terraform state and the API's object, its fields, and the waits its object needs.

use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use matrixhost_api::ErrorCode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tf_provider::schema::Schema;
use tf_provider::value::ValueEmpty;
use tf_provider::{AttributePath, Diagnostics, DynamicResource, Resource};

use super::{import_not_found, private, version_of, PrivateState};
use crate::client::{idempotency_key, ApiFailure, Client};
use crate::diag;
use crate::guarded;
use crate::provider::Ctx;
use crate::values::Value;

/// Which write a wait follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Create,
    Update,
}

impl Write {
    pub fn as_str(self) -> &'static str {
        match self {
            Write::Create => "create",
            Write::Update => "update",
        }
    }
}

/// A planned update: the state, and the attributes whose change forces a replacement.
pub struct Planned<S> {
    pub state: S,
    pub replace: Vec<&'static str>,
}

/// A Terraform resource backed by one API object.
#[async_trait]
pub trait ApiResource: Send + Sync + 'static {
    /// The resource's Terraform state.
    type State: Clone + Default + PartialEq + Serialize + DeserializeOwned + Send + Sync;
    /// The API's object.
    type Object: DeserializeOwned + Send + Sync;
    type CreateBody: Serialize + Send + Sync;
    type UpdateBody: Serialize + Send + Sync;

    /// The resource type's name in HCL: `matrixhost_reserved_user`.
    const TYPE: &'static str;
    /// Names the resource in messages: "reserved user".
    const NOUN: &'static str;
    /// The attributes an API error's `field` may point at.
    const FIELDS: &'static [&'static str];
    /// What an import id names, for "No <that> `id` exists".
    const IMPORTED: &'static str = Self::NOUN;

    fn schema() -> Schema;
    /// The rules on the configuration that need no network; unknown values pass.
    fn check(diags: &mut Diagnostics, config: &Self::State);

    /// The planned new object: the configuration with its defaults, computed values unknown.
    fn plan_new(config: &Self::State) -> Self::State;
    /// The planned change from `prior` to the configuration.
    fn plan_change(diags: &mut Diagnostics, prior: &Self::State, config: &Self::State) -> Planned<Self::State>;
    /// Plan-time checks against the catalog (best effort: the server checks again).
    async fn check_catalog(_ctx: &Ctx, _diags: &mut Diagnostics, _planned: &Self::State, _prior: Option<&Self::State>) {}
    /// Whether the object refuses to be destroyed (deletion protection), with its name.
    fn protected(_prior: &Self::State) -> Option<String> {
        None
    }

    /// Where a create is posted, from the planned state.
    fn create_path(diags: &mut Diagnostics, planned: &Self::State) -> Option<String>;
    /// The object's own path; `None` while its id is not known.
    fn item_path(state: &Self::State) -> Option<String>;
    fn version(object: &Self::Object) -> i64;
    /// The state for `object`. Where `reference` (planned or prior) holds what the API does not
    /// give back (write-only values, equivalent spellings), it is kept.
    fn to_state(object: &Self::Object, reference: &Self::State) -> Self::State;

    fn create_body(diags: &mut Diagnostics, planned: &Self::State) -> Option<Self::CreateBody>;
    fn update_body(diags: &mut Diagnostics, planned: &Self::State) -> Option<Self::UpdateBody>;
    /// Whether an update has anything for the API; when not, only the state changes.
    fn sends_update(_prior: &Self::State, _planned: &Self::State) -> bool {
        true
    }

    /// The object the state names, `None` when it is gone.
    async fn fetch(client: &Client, state: &Self::State) -> Result<Option<Self::Object>, ApiFailure> {
        match Self::item_path(state) {
            Some(path) => client.get_opt(&path).await,
            None => Ok(None),
        }
    }
    /// An object on its way out counts as gone.
    fn going(_object: &Self::Object) -> bool {
        false
    }
    /// After a write, waits until the change is in effect. Errors are diagnostics; the object
    /// exists whatever happens and is returned, unless it disappeared (`None`).
    async fn settle(_client: &Client, _diags: &mut Diagnostics, _write: Write, object: Self::Object, _prior: Option<&Self::State>, _planned: &Self::State) -> Option<Self::Object> {
        Some(object)
    }
    /// After the API accepted a delete with `status`, waits until the object is gone.
    async fn settle_delete(_client: &Client, _diags: &mut Diagnostics, _prior: &Self::State, _status: u16) -> Option<()> {
        Some(())
    }
    /// The object an import id names. `Err` explains an id of the wrong form.
    async fn lookup(client: &Client, id: &str) -> Result<Result<Option<Self::Object>, ApiFailure>, String>;
}

/// `R` as the provider lists it: its type name without the provider's prefix, and the resource.
pub fn entry<R: ApiResource>(ctx: &Arc<Ctx>) -> (String, Box<dyn DynamicResource>) {
    let name = R::TYPE.strip_prefix("matrixhost_").unwrap_or(R::TYPE);
    (name.to_owned(), Box::new(Managed::<R>::new(ctx.clone())))
}

/// The `tf_provider` resource for any [`ApiResource`].
pub struct Managed<R> {
    ctx: Arc<Ctx>,
    resource: PhantomData<fn() -> R>,
}

impl<R: ApiResource> Managed<R> {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Managed { ctx, resource: PhantomData }
    }

    fn state(object: &R::Object, reference: &R::State) -> Option<(R::State, PrivateState)> {
        Some((R::to_state(object, reference), private(R::version(object))))
    }

    fn failed(diags: &mut Diagnostics, doing: &str, e: &ApiFailure) {
        diag::api_error(diags, format!("Cannot {doing} {}", R::NOUN), e, R::FIELDS);
    }

    async fn do_read(&self, diags: &mut Diagnostics, state: R::State) -> Option<(R::State, PrivateState)> {
        let client = self.ctx.client(diags)?;
        match R::fetch(&client, &state).await {
            Ok(Some(o)) if !R::going(&o) => Self::state(&o, &state),
            // Gone out of band: Terraform drops it from the state and plans it again; never an error.
            Ok(_) => None,
            Err(e) => {
                Self::failed(diags, "read", &e);
                Some((state, Value::Null))
            }
        }
    }

    async fn do_plan_create(&self, diags: &mut Diagnostics, config: R::State) -> Option<(R::State, PrivateState)> {
        let planned = R::plan_new(&config);
        R::check_catalog(&self.ctx, diags, &planned, None).await;
        Some((planned, Value::Null))
    }

    async fn do_plan_update(&self, diags: &mut Diagnostics, prior: R::State, config: R::State, prior_private: PrivateState) -> Option<(R::State, PrivateState, Vec<AttributePath>)> {
        let planned = R::plan_change(diags, &prior, &config);
        if planned.state != prior {
            R::check_catalog(&self.ctx, diags, &planned.state, Some(&prior)).await;
        }
        let replace = planned.replace.iter().map(|a| diag::path(a)).collect();
        Some((planned.state, prior_private, replace))
    }

    fn do_plan_destroy(diags: &mut Diagnostics, prior: &R::State, prior_private: PrivateState) -> Option<PrivateState> {
        // Terraform 1.3+ asks before destroying; older ones learn it from the server at apply.
        if let Some(name) = R::protected(prior) {
            protected_error(diags, R::NOUN, &name, None);
            return None;
        }
        Some(prior_private)
    }

    async fn do_create(&self, diags: &mut Diagnostics, planned: R::State) -> Option<(R::State, PrivateState)> {
        let client = self.ctx.client(diags)?;
        let path = R::create_path(diags, &planned);
        let body = R::create_body(diags, &planned)?;
        match client.create::<_, R::Object>(&path?, &body, &idempotency_key()).await {
            Ok(o) => {
                let o = R::settle(&client, diags, Write::Create, o, None, &planned).await?;
                Self::state(&o, &planned)
            }
            Err(e) => {
                Self::failed(diags, "create", &e);
                None
            }
        }
    }

    async fn do_update(&self, diags: &mut Diagnostics, prior: R::State, planned: R::State, planned_private: PrivateState) -> Option<(R::State, PrivateState)> {
        if !R::sends_update(&prior, &planned) {
            return Some((planned, planned_private));
        }
        let client = self.ctx.client(diags)?;
        let Some(path) = R::item_path(&prior) else {
            diag::invalid(diags, "id", "the value is still unknown at apply time");
            return None;
        };
        let body = R::update_body(diags, &planned)?;
        match client.put::<_, R::Object>(&path, &body, version_of(&planned_private)).await {
            Ok(o) => {
                let o = R::settle(&client, diags, Write::Update, o, Some(&prior), &planned).await?;
                Self::state(&o, &planned)
            }
            Err(e) => {
                Self::failed(diags, "update", &e);
                None
            }
        }
    }

    async fn do_destroy(&self, diags: &mut Diagnostics, prior: R::State) -> Option<()> {
        let client = self.ctx.client(diags)?;
        let Some(path) = R::item_path(&prior) else { return Some(()) };
        match client.delete(&path).await {
            Ok((status, _)) => R::settle_delete(&client, diags, &prior, status).await,
            Err(e) if e.is_not_found() => Some(()),
            Err(e) if e.code() == Some(ErrorCode::DeletionProtected) => {
                let name = R::protected(&prior).unwrap_or_default();
                protected_error(diags, R::NOUN, &name, Some(&e));
                None
            }
            Err(e) => {
                Self::failed(diags, "delete", &e);
                None
            }
        }
    }

    async fn do_import(&self, diags: &mut Diagnostics, id: String) -> Option<(R::State, PrivateState)> {
        let client = self.ctx.client(diags)?;
        let id = id.trim();
        match R::lookup(&client, id).await {
            Ok(Ok(Some(o))) => Self::state(&o, &R::State::default()),
            Ok(Ok(None)) => {
                import_not_found(diags, R::NOUN, R::IMPORTED, id);
                None
            }
            Ok(Err(e)) if e.is_not_found() => {
                import_not_found(diags, R::NOUN, R::IMPORTED, id);
                None
            }
            Ok(Err(e)) => {
                Self::failed(diags, "import", &e);
                None
            }
            Err(why) => {
                diag::root_error(diags, format!("Cannot import {}", R::NOUN), why);
                None
            }
        }
    }
}

/// Destroying a protected object: an error on `deletion_protection`, with the way out.
fn protected_error(diags: &mut Diagnostics, noun: &str, name: &str, from_api: Option<&ApiFailure>) {
    let way_out = format!("Set `deletion_protection = false` and apply before destroying (or replacing) this {noun}.");
    let detail = match from_api {
        Some(e) => format!("{}\n\n{way_out}", e.message()),
        None => way_out,
    };
    let mut noun = noun.to_owned();
    noun[..1].make_ascii_uppercase();
    diag::error(diags, diag::path("deletion_protection"), format!("{noun} `{name}` is protected from deletion"), detail);
}

#[async_trait]
impl<R: ApiResource> Resource for Managed<R> {
    type State<'a> = R::State;
    type PrivateState<'a> = PrivateState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(R::schema())
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: Self::State<'a>) -> Option<()> {
        R::check(diags, &config);
        Some(())
    }

    async fn read<'a>(&self, diags: &mut Diagnostics, state: Self::State<'a>, _private: Self::PrivateState<'a>, _meta: Self::ProviderMetaState<'a>) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, self.do_read(diags, state))
    }

    async fn plan_create<'a>(&self, diags: &mut Diagnostics, _proposed: Self::State<'a>, config: Self::State<'a>, _meta: Self::ProviderMetaState<'a>) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, self.do_plan_create(diags, config))
    }

    async fn plan_update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        _proposed: Self::State<'a>,
        config: Self::State<'a>,
        prior_private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>, Vec<AttributePath>)> {
        guarded!(diags, self.do_plan_update(diags, prior, config, prior_private))
    }

    async fn plan_destroy<'a>(&self, diags: &mut Diagnostics, prior: Self::State<'a>, prior_private: Self::PrivateState<'a>, _meta: Self::ProviderMetaState<'a>) -> Option<Self::PrivateState<'a>> {
        Self::do_plan_destroy(diags, &prior, prior_private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        _private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, self.do_create(diags, planned))
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: Self::State<'a>,
        planned: Self::State<'a>,
        _config: Self::State<'a>,
        planned_private: Self::PrivateState<'a>,
        _meta: Self::ProviderMetaState<'a>,
    ) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, self.do_update(diags, prior, planned, planned_private))
    }

    async fn destroy<'a>(&self, diags: &mut Diagnostics, prior: Self::State<'a>, _private: Self::PrivateState<'a>, _meta: Self::ProviderMetaState<'a>) -> Option<()> {
        guarded!(diags, self.do_destroy(diags, prior))
    }

    async fn import<'a>(&self, diags: &mut Diagnostics, id: String) -> Option<(Self::State<'a>, Self::PrivateState<'a>)> {
        guarded!(diags, self.do_import(diags, id))
    }
}
