-- v2.0.6: contact and sign-in details on the user master.
-- Nullable columns (mfa_enbl with a constant default: catalog-only on
-- PostgreSQL 11+, no rewrite of cvs_usr_mast).

ALTER TABLE cvs_usr_mast
    ADD COLUMN phone_no      text,
    ADD COLUMN last_lgn_dttm timestamptz,
    ADD COLUMN mfa_enbl      boolean DEFAULT false;

COMMENT ON COLUMN cvs_usr_mast.phone_no IS 'Contact phone number (E.164).';
COMMENT ON COLUMN cvs_usr_mast.last_lgn_dttm IS 'Last successful login; NULL = never.';
COMMENT ON COLUMN cvs_usr_mast.mfa_enbl IS 'Multi-factor authentication required at login.';
