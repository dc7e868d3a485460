# Helpers of data.smk (included at its top).


def world_params():
    return as_json(config["world"])


def world_dir(wildcards, output):
    return os.path.dirname(output.info)


def download_params(wildcards):
    return settings_json("Download")


def download_manifest(wildcards):
    """The manifest for vltune download: the shipped one by name, or <download.manifests>/<source>.json."""
    folder = config["download"].get("manifests")
    return os.path.join(folder, f"{wildcards.source}.json") if folder else wildcards.source


def convert_sources(wildcards, input):
    """`NAME=RECORD` items for vltune convert (each source's download.json, which says where its
    files lie), each quoted."""
    return " ".join(shlex.quote(f"{os.path.basename(os.path.dirname(r))}={r}") for r in input.records)


def record_dir(wildcards, output):
    return os.path.dirname(output.record)


def data_ledgers():
    """The ledger records of the jobs that make the tables: the world, or each download and the conversion."""
    if DATASET == "shapes":
        return [rules.make_world.output.ledger]
    return [*expand(rules.download.output.ledger, source=config["download"]["sources"]), rules.convert.output.ledger]
