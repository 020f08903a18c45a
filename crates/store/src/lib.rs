//! sea-orm repositories: projects, keys, users (keyset streams), export tasks
