-- Undo v1.0.0: drop cvs_usr_mast and cvs_site_mast (their indexes, constraints
-- and identity sequence go with them).

DROP TABLE cvs_usr_mast;
DROP TABLE cvs_site_mast;
