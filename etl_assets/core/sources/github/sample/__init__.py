"""The demo's generated GitHub organisation, served through httpx's transport (``sample://`` URLs)."""

from etl_assets.core.sources.github.sample.handler import GitHubSiteHandler, sample_transport
from etl_assets.core.sources.github.sample.site import GitHubSite, generate_sample_org

__all__ = ["GitHubSite", "GitHubSiteHandler", "generate_sample_org", "sample_transport"]
