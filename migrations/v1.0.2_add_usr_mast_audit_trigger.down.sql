-- Undo v1.0.2: drop the audit trigger, its function, then the audit table.

DROP TRIGGER cvs_usr_mast_adt_trg ON cvs_usr_mast;
DROP FUNCTION cvs_usr_mast_adt_fn();
DROP TABLE cvs_usr_mast_adt;
