from graph_distill.cli.main import main

main()
