"""Bring your own data: recipes that need no code, for every task family of the kit.

Sources (one recipe each; all share the field mapping, split and box options of `generic.options`):

    table          JSONL / CSV / TSV / Parquet annotation files with an image column
    coco_json      COCO-format annotation JSON (captions; instances with boxes and categories)
    class_folders  an image folder with one class per sub-folder
    hf_dataset     a dataset saved with HF `datasets` (save_to_disk, or local Parquet / Arrow files)

Each source yields plain records (dicts); `generic.fields.build_sample` turns a record into a shard sample for
the chosen `--task` (the fields the kit's task reads, see `generic.fields.TASKS`). `ofa-prepare inspect` shows
what was written.
"""
