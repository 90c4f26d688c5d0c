#!/usr/bin/env python
"""Segment your own images, folders and videos with any repseg model file:
a deployed file alone (.onnx for ONNX Runtime, .xml for OpenVINO; fp32 or
INT8) or a config with a training or fused checkpoint (PyTorch). Label maps
(PNG) keep each input's name under DIR/labels/, overlays go to
DIR/overlays/; a rerun into the same DIR resumes.

  python tools/infer.py street/ --model deploy/model_int8.xml --out out
  python tools/infer.py a.jpg b.png --model CONFIG --checkpoint CKPT --out out
  python tools/infer.py drive.mp4 --model m.onnx --out out --every 5 --overlay
  python tools/infer.py photos/ --model OLD.onnx --config CONFIG --out out
  python tools/infer.py /shared/archive --recursive --model m.xml \
      --out /shared/out --ray --ray-address HEAD:6379 --threads 4
"""
from _cli import add_force, make_parser, run


def build_parser():
    p = make_parser(__doc__)
    p.add_argument('inputs', nargs='+', metavar='INPUT',
                   help='Image files, folders, glob patterns, .txt files '
                   'listing one path per line, or video files.')
    p.add_argument('--model', required=True,
                   help='A deployed file (.onnx, .xml) or a config (.py) '
                   'with --checkpoint.')
    p.add_argument('--checkpoint',
                   help="The config's training or fused checkpoint.")
    p.add_argument('--config',
                   help='The config a deployed file was exported from, for '
                   'files that do not record their inference recipe.')
    p.add_argument('--out', required=True, metavar='DIR',
                   help='The output folder (labels/, overlays/, '
                   'manifest.json, done.txt, failures.txt).')
    p.add_argument('--recursive', action='store_true',
                   help='Search folders recursively.')
    p.add_argument('--every', type=int, default=1, metavar='N',
                   help="Segment a video's every N-th frame (default 1).")
    p.add_argument('--label-ids', action='store_true',
                   help='Write Cityscapes label ids (for its evaluation '
                   'server) instead of train ids.')
    p.add_argument('--overlay', action='store_true',
                   help='Also write overlays of the label colours (and an '
                   'overlay video per video).')
    p.add_argument('--opacity', type=float, default=0.5,
                   help='The opacity of the overlay colours (default 0.5).')
    p.add_argument('--areas', action='store_true',
                   help="Write each image's class pixel shares to "
                   'DIR/areas.csv.')
    p.add_argument('--mode', choices=['auto', 'latency', 'throughput'],
                   default='auto',
                   help='Latency (one request with every thread), '
                   'throughput (several requests in flight) or auto (the '
                   'default: throughput for more than one image).')
    p.add_argument('--threads', type=int,
                   help='Threads in all (streams x threads per stream; '
                   'default: every CPU this process may use).')
    p.add_argument('--cache-dir',
                   help="OpenVINO: a folder for compiled models (the next "
                   'run starts faster).')
    p.add_argument('--device', default='cpu',
                   help='PyTorch models: the device (cpu, cuda:0, ...).')
    p.add_argument('--batch-size', type=int, metavar='N',
                   help='PyTorch models: images of one size run N at a time '
                   '(default: 4 in throughput mode, 1 in latency mode).')
    p.add_argument('--no-pipeline', dest='pipeline', action='store_false',
                   help='Read, run and write one image after the other '
                   '(for comparison; the default overlaps them).')
    p.add_argument('--shard', metavar='K/N',
                   help='Take the K-th of every N inputs (stable sorted '
                   'order): N processes or machines split one job into one '
                   'DIR.')
    p.add_argument('--ray', action='store_true',
                   help='Run on Ray (a local cluster, or --ray-address): '
                   'actors of --threads CPUs each (default 2) hold the model; '
                   'DIR must be on a filesystem every worker shares.')
    p.add_argument('--ray-address', metavar='ADDR',
                   help='The Ray cluster to join (HOST:PORT or auto); '
                   'implies --ray.')
    p.add_argument('--stall-timeout', type=float, default=120,
                   metavar='SECONDS',
                   help='End the run with one error line when an image has '
                   'not finished in SECONDS (default 120; 20x the slowest '
                   'image so far when that is longer). Finished images stay '
                   'finished; a rerun resumes.')
    p.add_argument('--quiet', action='store_true',
                   help='No progress bar.')
    add_force(p, 'the outputs of another run in DIR: they are deleted first '
              'and everything is redone (files no run wrote are never '
              'deleted; not with --shard)')
    return p


def main(argv=None):
    def infer(args):
        import sys

        from repseg.apis import InferSettings, infer, unsearched_subfolders
        if not args.recursive:
            for folder, n in unsearched_subfolders(args.inputs).items():
                print(f'note: {n} subfolder(s) of {folder!r} hold images or '
                      'videos and are not searched: add --recursive to '
                      'segment them too', file=sys.stderr)

        def failed(result):   # one line per image that failed, as it does
            if result.status == 'failed':
                print(f'failed: {result.input}: {result.reason}',
                      file=sys.stderr, flush=True)

        seg = infer(args.inputs, args.model, args.out, args.checkpoint,
                    args.config, InferSettings.of(vars(args)), failed)
        print('\n'.join(seg.summary.lines()))
        if seg.summary.failed:
            sys.exit(1)

    run(build_parser(), infer, argv)


if __name__ == '__main__':
    main()
