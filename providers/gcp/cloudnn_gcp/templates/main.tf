# One-time setup of Google Cloud for cloudnn, as Terraform (same as setup.sh).
#   terraform init && terraform apply
terraform {
  required_providers {
    google = { source = "hashicorp/google", version = ">= 5.0" }
  }
}

variable "project" { default = "{{project}}" }
variable "region" { default = "{{region}}" }
variable "bucket" { default = "{{bucket}}" }
# who runs cloudnn, e.g. "user:you@example.com" or "serviceAccount:ci@..."
variable "operator" { default = "" }

provider "google" {
  project = var.project
  region  = var.region
}

resource "google_project_service" "apis" {
  for_each           = toset(["aiplatform.googleapis.com", "storage.googleapis.com", "logging.googleapis.com"])
  service            = each.value
  disable_on_destroy = false
}

# bundles, data, checkpoints and models
resource "google_storage_bucket" "staging" {
  name                        = var.bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
}

# the identity jobs and endpoints run as (providers.gcp.service_account)
resource "google_service_account" "cloudnn" {
  account_id   = "cloudnn-vertex"
  display_name = "cloudnn Vertex AI jobs and endpoints"
}

resource "google_storage_bucket_iam_member" "jobs_objects" {
  bucket = google_storage_bucket.staging.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.cloudnn.email}"
}

resource "google_project_iam_member" "jobs_logs" {
  project = var.project
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.cloudnn.email}"
}

# the operator: submit, deploy, predict, read logs, act as the job identity
resource "google_project_iam_member" "operator" {
  for_each = var.operator == "" ? toset([]) : toset(["roles/aiplatform.user", "roles/logging.viewer"])
  project  = var.project
  role     = each.value
  member   = var.operator
}

resource "google_service_account_iam_member" "operator_act_as" {
  count              = var.operator == "" ? 0 : 1
  service_account_id = google_service_account.cloudnn.name
  role               = "roles/iam.serviceAccountUser"
  member             = var.operator
}

resource "google_storage_bucket_iam_member" "operator_objects" {
  count  = var.operator == "" ? 0 : 1
  bucket = google_storage_bucket.staging.name
  role   = "roles/storage.objectAdmin"
  member = var.operator
}

output "environment" {
  value = <<-EOT
    export GOOGLE_CLOUD_PROJECT=${var.project}
    export CLOUDNN_GCP_REGION=${var.region}
    export CLOUDNN_GCP_BUCKET=${var.bucket}
    # spec: providers: {gcp: {service_account: ${google_service_account.cloudnn.email}}}
  EOT
}
