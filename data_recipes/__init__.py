"""Raw public dataset formats -> WebDataset shards of raw samples (image bytes + JSON fields).

One module per source (coco_caption, vqav2, refcoco, snli_ve, detection, imagenet, glue, gigaword,
text_corpus, vq_codes, ofa_tsv), the `shapes` generator of a small synthetic dataset in those same official
formats, and `common/` for what they share. Recipes never tokenise or build prompts: that happens in the
training pipeline, so one set of shards serves every tokenizer and prompt variant.
"""
