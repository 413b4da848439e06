-- v1.0.2: audit trail for cvs_usr_mast.
-- cvs_usr_mast_adt receives one row per inserted, updated or deleted user:
-- the operation, the old and new row as jsonb, and who/when. It is filled by
-- the plpgsql trigger function cvs_usr_mast_adt_fn(). The audit table has no
-- foreign key to cvs_usr_mast on purpose: audit rows outlive deleted users.

CREATE TABLE cvs_usr_mast_adt (
    clnt_id    int2        NOT NULL,
    site_id    int2        NOT NULL,
    adt_id     int8        GENERATED ALWAYS AS IDENTITY,
    usr_id     int4        NOT NULL,
    adt_op     char(1)     NOT NULL,
    old_row    jsonb,
    new_row    jsonb,
    adt_dttm   timestamptz NOT NULL DEFAULT now(),
    adt_by     text        NOT NULL DEFAULT current_user,
    rcrd_stat  int2        NOT NULL DEFAULT 1,
    mod_dttm   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT cvs_usr_mast_adt_pk PRIMARY KEY (clnt_id, site_id, adt_id),
    CONSTRAINT cvs_usr_mast_adt_op_ck CHECK (adt_op IN ('I', 'U', 'D')),
    CONSTRAINT cvs_usr_mast_adt_rows_ck CHECK (
        (adt_op = 'I' AND old_row IS NULL AND new_row IS NOT NULL)
        OR (adt_op = 'U' AND old_row IS NOT NULL AND new_row IS NOT NULL)
        OR (adt_op = 'D' AND old_row IS NOT NULL AND new_row IS NULL)),
    CONSTRAINT cvs_usr_mast_adt_rcrd_stat_ck CHECK (rcrd_stat IN (0, 1))
);

COMMENT ON TABLE cvs_usr_mast_adt IS 'Audit trail of cvs_usr_mast, written by cvs_usr_mast_adt_trg.';
COMMENT ON COLUMN cvs_usr_mast_adt.adt_op IS 'I = insert, U = update, D = delete';

-- History of one user, newest first.
CREATE INDEX cvs_usr_mast_adt_usr_ix ON cvs_usr_mast_adt (clnt_id, site_id, usr_id, adt_dttm DESC);

CREATE FUNCTION cvs_usr_mast_adt_fn() RETURNS trigger
    LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO cvs_usr_mast_adt (clnt_id, site_id, usr_id, adt_op, old_row, new_row, adt_dttm, adt_by)
        VALUES (NEW.clnt_id, NEW.site_id, NEW.usr_id, 'I', NULL, to_jsonb(NEW),
                clock_timestamp(), coalesce(NEW.mod_by, current_user));
    ELSIF TG_OP = 'UPDATE' THEN
        -- An UPDATE that changes nothing is not worth an audit row.
        IF OLD IS NOT DISTINCT FROM NEW THEN
            RETURN NULL;
        END IF;
        INSERT INTO cvs_usr_mast_adt (clnt_id, site_id, usr_id, adt_op, old_row, new_row, adt_dttm, adt_by)
        VALUES (NEW.clnt_id, NEW.site_id, NEW.usr_id, 'U', to_jsonb(OLD), to_jsonb(NEW),
                clock_timestamp(), coalesce(NEW.mod_by, current_user));
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO cvs_usr_mast_adt (clnt_id, site_id, usr_id, adt_op, old_row, new_row, adt_dttm, adt_by)
        VALUES (OLD.clnt_id, OLD.site_id, OLD.usr_id, 'D', to_jsonb(OLD), NULL,
                clock_timestamp(), current_user);
    END IF;
    RETURN NULL;  -- AFTER trigger: the return value is ignored
END;
$$;

COMMENT ON FUNCTION cvs_usr_mast_adt_fn() IS 'Trigger function: copies every change of cvs_usr_mast into cvs_usr_mast_adt.';

CREATE TRIGGER cvs_usr_mast_adt_trg
    AFTER INSERT OR UPDATE OR DELETE ON cvs_usr_mast
    FOR EACH ROW EXECUTE FUNCTION cvs_usr_mast_adt_fn();
