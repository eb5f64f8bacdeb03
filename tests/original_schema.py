"""The schema the original operator-service created, with a row in each table, for the upgrade tests."""

ORIGINAL_HEAD_SCHEMA = """
CREATE TABLE jobs (agreementId varchar(255) NOT NULL, workflowId varchar(255) NOT NULL, owner varchar(255),
  status int, statusText varchar(255), laststatusupdate timestamp without time zone default NOW(),
  dateCreated timestamp without time zone default NOW(), dateFinished timestamp without time zone default NULL,
  configlogURL text, publishlogURL text, algologURL text, outputsURL text, ddo text, namespace varchar(255),
  stopreq smallint default 0, removed smallint default 0, workflow text, provider varchar(255));
CREATE UNIQUE INDEX uniq_agreementId_workflowId ON jobs (agreementId, workflowId);
CREATE TABLE envs (namespace varchar(255) NOT NULL, status text, lastping timestamp without time zone default NOW());
CREATE UNIQUE INDEX unique_namespace ON envs (namespace);
CREATE TABLE nonces (provider varchar(255) NOT NULL, nonce varchar(255));
INSERT INTO jobs (agreementId, workflowId, owner, status, statusText, workflow, namespace)
  VALUES ('0xold', 'oldjob', '0xowner', 70, 'Job finished', '{}', 'ocean-compute');
INSERT INTO nonces VALUES ('0xprovider', '1693400000.5');
"""
