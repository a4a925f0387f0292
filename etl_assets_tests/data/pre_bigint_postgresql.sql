CREATE TABLE raw_batches (
	id SERIAL NOT NULL,
	tenant_id VARCHAR(48) NOT NULL,
	entity VARCHAR(32) NOT NULL,
	kind VARCHAR(16) NOT NULL,
	fetched_at TIMESTAMP WITH TIME ZONE NOT NULL,
	pages INTEGER NOT NULL,
	records INTEGER NOT NULL,
	run_id VARCHAR(64),
	consumed_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id)
);

CREATE INDEX ix_raw_batches_pending ON raw_batches (tenant_id, entity, consumed_at);

CREATE TABLE rejected_records (
	id SERIAL NOT NULL,
	tenant_id VARCHAR(48) NOT NULL,
	entity VARCHAR(32) NOT NULL,
	external_id VARCHAR(64),
	reason TEXT NOT NULL,
	payload TEXT NOT NULL,
	batch_id INTEGER,
	rejected_at TIMESTAMP WITH TIME ZONE NOT NULL,
	PRIMARY KEY (id)
);

CREATE INDEX ix_rejected_tenant_entity ON rejected_records (tenant_id, entity);

CREATE TABLE sync_state (
	tenant_id VARCHAR(48) NOT NULL,
	entity VARCHAR(32) NOT NULL,
	watermark TIMESTAMP WITH TIME ZONE,
	syncs_since_reconcile INTEGER NOT NULL,
	last_reconciled_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (tenant_id, entity)
);

CREATE TABLE projects (
	id SERIAL NOT NULL,
	tenant_id VARCHAR(48) NOT NULL,
	external_id VARCHAR(64) NOT NULL,
	key VARCHAR(64) NOT NULL,
	name VARCHAR(1000) NOT NULL,
	description TEXT,
	category VARCHAR(1000),
	project_type VARCHAR(64),
	management VARCHAR(32),
	lead VARCHAR(1000),
	url VARCHAR(2000),
	icon_url VARCHAR(2000),
	content_hash VARCHAR(64) NOT NULL,
	data JSON NOT NULL,
	first_seen_at TIMESTAMP WITH TIME ZONE NOT NULL,
	synced_at TIMESTAMP WITH TIME ZONE NOT NULL,
	deleted_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id),
	CONSTRAINT uq_projects_tenant_external UNIQUE (tenant_id, external_id)
);

CREATE INDEX ix_projects_tenant_live ON projects (tenant_id, deleted_at);

CREATE TABLE wits (
	id SERIAL NOT NULL,
	tenant_id VARCHAR(48) NOT NULL,
	external_id VARCHAR(64) NOT NULL,
	name VARCHAR(1000) NOT NULL,
	description TEXT,
	hierarchy_level INTEGER,
	subtask BOOLEAN,
	scope_type VARCHAR(32),
	scope_project_id VARCHAR(64),
	icon_url VARCHAR(2000),
	content_hash VARCHAR(64) NOT NULL,
	data JSON NOT NULL,
	first_seen_at TIMESTAMP WITH TIME ZONE NOT NULL,
	synced_at TIMESTAMP WITH TIME ZONE NOT NULL,
	deleted_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id),
	CONSTRAINT uq_wits_tenant_external UNIQUE (tenant_id, external_id)
);

CREATE INDEX ix_wits_tenant_live ON wits (tenant_id, deleted_at);

CREATE TABLE statuses (
	id SERIAL NOT NULL,
	tenant_id VARCHAR(48) NOT NULL,
	external_id VARCHAR(64) NOT NULL,
	name VARCHAR(1000) NOT NULL,
	description TEXT,
	category_key VARCHAR(64),
	category_name VARCHAR(1000),
	scope_type VARCHAR(32),
	scope_project_id VARCHAR(64),
	icon_url VARCHAR(2000),
	content_hash VARCHAR(64) NOT NULL,
	data JSON NOT NULL,
	first_seen_at TIMESTAMP WITH TIME ZONE NOT NULL,
	synced_at TIMESTAMP WITH TIME ZONE NOT NULL,
	deleted_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id),
	CONSTRAINT uq_statuses_tenant_external UNIQUE (tenant_id, external_id)
);

CREATE INDEX ix_statuses_tenant_live ON statuses (tenant_id, deleted_at);

CREATE TABLE issues (
	id SERIAL NOT NULL,
	tenant_id VARCHAR(48) NOT NULL,
	external_id VARCHAR(64) NOT NULL,
	key VARCHAR(64) NOT NULL,
	summary VARCHAR(2000) NOT NULL,
	description TEXT,
	project_external_id VARCHAR(64),
	project_key VARCHAR(64),
	wit_external_id VARCHAR(64),
	wit_name VARCHAR(1000),
	status_external_id VARCHAR(64),
	status_name VARCHAR(1000),
	status_category VARCHAR(64),
	priority VARCHAR(1000),
	labels JSON NOT NULL,
	components JSON NOT NULL,
	assignee VARCHAR(1000),
	reporter VARCHAR(1000),
	resolution VARCHAR(1000),
	parent_key VARCHAR(64),
	created TIMESTAMP WITH TIME ZONE,
	updated TIMESTAMP WITH TIME ZONE NOT NULL,
	content_hash VARCHAR(64) NOT NULL,
	data JSON NOT NULL,
	first_seen_at TIMESTAMP WITH TIME ZONE NOT NULL,
	synced_at TIMESTAMP WITH TIME ZONE NOT NULL,
	deleted_at TIMESTAMP WITH TIME ZONE,
	PRIMARY KEY (id),
	CONSTRAINT uq_issues_tenant_external UNIQUE (tenant_id, external_id)
);

CREATE INDEX ix_issues_tenant_live ON issues (tenant_id, deleted_at);

CREATE TABLE raw_jira_pages (
	id SERIAL NOT NULL,
	batch_id INTEGER NOT NULL,
	tenant_id VARCHAR(48) NOT NULL,
	entity VARCHAR(32) NOT NULL,
	page_no INTEGER NOT NULL,
	method VARCHAR(8) NOT NULL,
	path VARCHAR(512) NOT NULL,
	params JSON NOT NULL,
	status INTEGER NOT NULL,
	fetched_at TIMESTAMP WITH TIME ZONE NOT NULL,
	content_hash VARCHAR(64) NOT NULL,
	body TEXT NOT NULL,
	PRIMARY KEY (id),
	FOREIGN KEY(batch_id) REFERENCES raw_batches (id) ON DELETE CASCADE
);

CREATE INDEX ix_raw_jira_pages_batch_id ON raw_jira_pages (batch_id);
