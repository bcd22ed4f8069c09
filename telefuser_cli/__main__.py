from telefuser_cli.cli import main

main()
