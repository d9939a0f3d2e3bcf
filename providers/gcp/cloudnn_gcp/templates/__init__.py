"""One-time Google Cloud setup for cloudnn, as files ``cloudnn setup --provider gcp`` prints.

``setup.sh`` (gcloud commands) and ``main.tf`` (the same as Terraform) create
a staging bucket and a service account for training jobs and endpoints with
the least roles cloudnn needs: object admin on that bucket only, log writing,
and Vertex AI use. Placeholders are filled in from the configuration where it
is known (project, region, bucket).
"""

from __future__ import annotations

from importlib import resources

from cloudnn_gcp.config import PLACEHOLDER_BUCKET, PLACEHOLDER_PROJECT, Target

__all__ = ["FILES", "render"]

FILES = ("setup.sh", "main.tf")


def render(target: Target) -> dict[str, str]:
    """File name -> text, with ``{project}``, ``{region}``, ``{bucket}`` filled in."""
    values = {
        "project": target.project or PLACEHOLDER_PROJECT,
        "region": target.region,
        "bucket": target.bucket
        or (f"{target.project}-cloudnn" if target.project else PLACEHOLDER_BUCKET),
        "prefix": target.prefix,
    }
    out: dict[str, str] = {}
    for name in FILES:
        text = resources.files(__name__).joinpath(name).read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        out[name] = text
    return out
