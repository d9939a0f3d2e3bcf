#!/usr/bin/env bash
# One-time setup of Google Cloud for cloudnn (Vertex AI custom jobs and endpoints).
# Review, then run with a project owner's credentials:  bash setup.sh
# Creates: the APIs, a staging bucket, a service account with minimal roles.
set -euo pipefail

PROJECT="{{project}}"
REGION="{{region}}"
BUCKET="{{bucket}}"
SA_NAME="cloudnn-vertex"
SA="${SA_NAME}@${PROJECT}.iam.gserviceaccount.com"

gcloud config set project "${PROJECT}"
gcloud services enable aiplatform.googleapis.com storage.googleapis.com logging.googleapis.com

# Staging bucket: bundles, data, checkpoints, models. Same region as the jobs,
# uniform access (IAM only), no public access.
gcloud storage buckets create "gs://${BUCKET}" --location="${REGION}" \
  --uniform-bucket-level-access --public-access-prevention

# The identity jobs and endpoints run as (providers.gcp.service_account).
gcloud iam service-accounts create "${SA_NAME}" \
  --display-name="cloudnn Vertex AI jobs and endpoints"

# Read/write its bucket only (bundles, data, checkpoints, the model).
gcloud storage buckets add-iam-policy-binding "gs://${BUCKET}" \
  --member="serviceAccount:${SA}" --role="roles/storage.objectAdmin"
# Write its logs (what `cloudnn logs` reads).
gcloud projects add-iam-policy-binding "${PROJECT}" \
  --member="serviceAccount:${SA}" --role="roles/logging.logWriter" --condition=None

# The person (or CI identity) running cloudnn needs, on the project:
#   roles/aiplatform.user        submit jobs, deploy and call endpoints
#   roles/logging.viewer         read job logs
#   roles/iam.serviceAccountUser on ${SA} only (to run jobs as it)
#   roles/storage.objectAdmin    on gs://${BUCKET} only (uploads)
# e.g.:  USER=user:you@example.com
#   gcloud projects add-iam-policy-binding "${PROJECT}" --member="${USER}" --role=roles/aiplatform.user --condition=None
#   gcloud projects add-iam-policy-binding "${PROJECT}" --member="${USER}" --role=roles/logging.viewer --condition=None
#   gcloud iam service-accounts add-iam-policy-binding "${SA}" --member="${USER}" --role=roles/iam.serviceAccountUser
#   gcloud storage buckets add-iam-policy-binding "gs://${BUCKET}" --member="${USER}" --role=roles/storage.objectAdmin

cat <<DONE

Done. Point cloudnn at it (environment, or providers.gcp in a spec):
  export GOOGLE_CLOUD_PROJECT=${PROJECT}
  export CLOUDNN_GCP_REGION=${REGION}
  export CLOUDNN_GCP_BUCKET=${BUCKET}
  # spec:  providers: {gcp: {service_account: ${SA}}}
  gcloud auth application-default login
  cloudnn check --provider gcp
DONE
