#!/usr/bin/env sh
# Run once per deployment, and again after every Dagster upgrade (idempotent): brings the
# instance schema in PostgreSQL up to date and sets the pool limits, which Dagster stores
# in the instance database rather than in dagster.yaml.
#
#   ETL_POOL_JIRA        steps calling Jira at once, across all runs (default 4)
#   ETL_POOL_EMBEDDINGS  steps calling the embedding provider at once, across all runs (default 2)
#
# Needs DAGSTER_HOME (with deploy/dagster.yaml as dagster.yaml) and the DAGSTER_PG_* variables.
set -eu
: "${DAGSTER_HOME:?DAGSTER_HOME must point at the folder holding the instance dagster.yaml}"
DAGSTER=${DAGSTER:-dagster}
"$DAGSTER" instance migrate
"$DAGSTER" instance concurrency set jira "${ETL_POOL_JIRA:-4}"
"$DAGSTER" instance concurrency set embeddings "${ETL_POOL_EMBEDDINGS:-2}"
