//! `/api/v1/profiles` and `/api/v1/images`: the loaded catalog, read-only.

use axum::Json;
use axum::extract::State;
use provisioner_core::catalog::{ConfigKind, Image, Profile};
use serde::Serialize;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::params::IdParam;

/// A profile.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ProfileView {
    /// Id.
    pub id: String,
    /// Free text.
    pub description: String,
    /// Image id.
    pub image: String,
    /// Extra kernel arguments.
    pub args: Vec<String>,
    /// Config served: `talos`, `flatcar`, `plain` or `none`.
    pub config: String,
    /// Cluster in `infra/`.
    pub cluster: Option<String>,
    /// Groups assigning it.
    pub groups: Vec<String>,
}

/// An image.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ImageView {
    /// Id.
    pub id: String,
    /// Free text.
    pub description: String,
    /// Kernel file name.
    pub kernel: String,
    /// Initrd file names, in order.
    pub initrds: Vec<String>,
    /// Kernel arguments.
    pub args: Vec<String>,
}

fn config_name(k: ConfigKind) -> &'static str {
    match k {
        ConfigKind::Talos => "talos",
        ConfigKind::Flatcar => "flatcar",
        ConfigKind::Plain => "plain",
        ConfigKind::None => "none",
    }
}

fn profile_view(st: &ApiState, p: &Profile) -> ProfileView {
    ProfileView {
        id: p.id.clone(),
        description: p.description.clone(),
        image: p.image.clone(),
        args: p.args.clone(),
        config: config_name(p.config).into(),
        cluster: p.cluster.clone(),
        groups: st
            .ops
            .catalog
            .groups
            .values()
            .filter(|g| g.profile == p.id)
            .map(|g| g.id.clone())
            .collect(),
    }
}

fn image_view(i: &Image) -> ImageView {
    ImageView {
        id: i.id.clone(),
        description: i.description.clone(),
        kernel: i.kernel.file.clone(),
        initrds: i.initrds.iter().map(|f| f.file.clone()).collect(),
        args: i.args.clone(),
    }
}

/// Every profile.
#[utoipa::path(get, path = "/api/v1/profiles", tag = "catalog",
    responses(
        (status = 200, description = "Profiles by id", body = Vec<ProfileView>),
        (status = 401, description = "No or unknown token", body = ErrorBody),
    ))]
pub async fn profiles(State(st): State<ApiState>) -> Json<Vec<ProfileView>> {
    Json(
        st.ops
            .catalog
            .profiles
            .values()
            .map(|p| profile_view(&st, p))
            .collect(),
    )
}

/// One profile.
#[utoipa::path(get, path = "/api/v1/profiles/{id}", tag = "catalog",
    params(("id" = String, Path, description = "Profile id")),
    responses(
        (status = 200, description = "The profile", body = ProfileView),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "No such profile", body = ErrorBody),
        (status = 422, description = "Bad path", body = ErrorBody),
    ))]
pub async fn profile(
    State(st): State<ApiState>,
    IdParam(id): IdParam,
) -> Result<Json<ProfileView>, ApiError> {
    st.ops
        .catalog
        .profiles
        .get(&id)
        .map(|p| Json(profile_view(&st, p)))
        .ok_or_else(|| ApiError::not_found("profile_not_found", format!("no profile {id:?}")))
}

/// Every image.
#[utoipa::path(get, path = "/api/v1/images", tag = "catalog",
    responses(
        (status = 200, description = "Images by id", body = Vec<ImageView>),
        (status = 401, description = "No or unknown token", body = ErrorBody),
    ))]
pub async fn images(State(st): State<ApiState>) -> Json<Vec<ImageView>> {
    Json(st.ops.catalog().images.values().map(image_view).collect())
}

/// One image.
#[utoipa::path(get, path = "/api/v1/images/{id}", tag = "catalog",
    params(("id" = String, Path, description = "Image id")),
    responses(
        (status = 200, description = "The image", body = ImageView),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "No such image", body = ErrorBody),
        (status = 422, description = "Bad path", body = ErrorBody),
    ))]
pub async fn image(State(st): State<ApiState>, IdParam(id): IdParam) -> Result<Json<ImageView>, ApiError> {
    st.ops
        .catalog
        .images
        .get(&id)
        .map(|i| Json(image_view(i)))
        .ok_or_else(|| ApiError::not_found("image_not_found", format!("no image {id:?}")))
}
